//! Scenario files (`docs/scenarios.md`): parsed, checked and expanded into
//! one [`Plan`] per combination of the `[vary]` values, before anything
//! starts. Every error names the file's line it is about.
//!
//! No processes here: `run.rs` starts what a plan says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// How a network flag's value is checked: its parse error, if any.
type FlagCheck = fn(&str) -> std::result::Result<(), String>;

/// A scenario file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    /// The file's 1-based line the error is about, when it is about one.
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

type Result<T> = std::result::Result<T, FileError>;

/// The file as written (every key the docs name; any other is refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    memory_quota: Option<Spanned<String>>,
    cpus: Option<Spanned<toml::Value>>,
    #[serde(default)]
    vary: Ordered<Spanned<toml::Value>>,
    #[serde(default)]
    instance: Vec<RawInstance>,
    #[serde(default)]
    metric: Ordered<Spanned<String>>,
    experiment: Option<RawExperiment>,
    network: Option<RawNetwork>,
}

/// A table's entries in file order.
struct Ordered<V>(Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Spanned<String>,
    image: Spanned<String>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    count: Option<Spanned<toml::Value>>,
    cpus: Option<Spanned<toml::Value>>,
    memory: Option<Spanned<String>>,
    host_cpus: Option<Spanned<toml::Value>>,
    placement: Option<Spanned<String>>,
    #[serde(default)]
    mounts: Vec<Spanned<String>>,
    initrd: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    net: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    publish: Vec<Spanned<String>>,
    expect_exit: Option<Spanned<toml::Value>>,
    #[serde(default)]
    expect_output: Vec<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    ready_when: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    repeat: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    subnet: Spanned<String>,
}

/// A checked scenario file: its sweep and, for each combination, a plan.
pub(crate) struct Scenario {
    pub(crate) name: String,
    /// The `[vary]` variables in file order, each with its values.
    pub(crate) vary: Vec<(String, Vec<String>)>,
    /// The variables the file gives more than one value.
    swept: Vec<String>,
    /// The `[metric]` names in file order.
    pub(crate) metrics: Vec<String>,
    pub(crate) repeat: u32,
    pub(crate) timeout: Option<Duration>,
    raw: RawScenario,
    text: String,
    dir: PathBuf,
}

/// What one run starts: every copy of every instance, for one
/// combination of the variables.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The variables' values in this run (`[vary]` order).
    pub(crate) values: Vec<(String, String)>,
    /// The variables the file gives more than one value.
    swept: Vec<String>,
    /// The host CPUs the whole scenario may use.
    pub(crate) cpus: Vec<usize>,
    /// The file's directory, where the VMs run (relative paths are
    /// relative to it).
    pub(crate) dir: PathBuf,
    pub(crate) copies: Vec<Copy>,
    /// `[metric]`: each name with its regular expression.
    pub(crate) metrics: Vec<(String, regex::Regex)>,
    pub(crate) timeout: Option<Duration>,
}

/// One VM of a run.
#[derive(Debug)]
pub(crate) struct Copy {
    /// `kv-0`: its instance's name, and its index when `count` is given.
    pub(crate) name: String,
    /// The `[[instance]]` it is a copy of.
    pub(crate) instance: String,
    pub(crate) image: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) vcpus: u32,
    pub(crate) memory_bytes: u64,
    /// Host CPU for vCPU n: `pin[n % pin.len()]`.
    pub(crate) pin: Vec<usize>,
    pub(crate) mounts: Vec<String>,
    pub(crate) initrd: Option<PathBuf>,
    pub(crate) cmdline: Option<String>,
    /// `--net`, `--ip`, `--gateway` and `-p` as the file gives them.
    pub(crate) net_flags: Vec<String>,
    /// Its address on the scenario's switch, with the prefix length.
    pub(crate) ip: Option<(std::net::Ipv4Addr, u8)>,
    pub(crate) expect_exit: i32,
    pub(crate) expect_output: Vec<String>,
    /// Copies that must have printed their `ready_when` first.
    pub(crate) after: Vec<String>,
    pub(crate) ready_when: Option<String>,
}

impl Plan {
    /// `instances=2 placement=shared`: the variables the file gives more
    /// than one value (`run` when there are none).
    pub(crate) fn label(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .filter(|(k, _)| self.swept.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if parts.is_empty() {
            "run".into()
        } else {
            parts.join(" ")
        }
    }
}

/// 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// Parse `text`, the contents of the file at `path` (images are
    /// relative to its directory).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| FileError {
            line: e.span().map(|span| line_of(text, span.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        let at = |span: Range<usize>, message: String| FileError {
            line: Some(line_of(text, span.start)),
            message,
        };
        if raw.instance.is_empty() {
            return Err(FileError {
                line: None,
                message: "the scenario has no [[instance]]".into(),
            });
        }
        let mut vary = Vec::new();
        for (key, value) in &raw.vary.0 {
            let line = Some(line_of(text, value.span().start));
            let error = |message: String| FileError { line, message };
            let toml::Value::Array(values) = value.get_ref() else {
                return Err(error(format!("[vary] {key} is not a list of values")));
            };
            if values.is_empty() {
                return Err(error(format!("[vary] {key} has no values")));
            }
            let values = values
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        Ok(v.to_string())
                    }
                    _ => Err(error(format!(
                        "[vary] {key}: {v} is not a string or number"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            vary.push((key.clone(), values));
        }
        let repeat = match &raw.experiment.as_ref().and_then(|e| e.repeat.clone()) {
            None => 1,
            Some(r) => u32::try_from(*r.get_ref())
                .ok()
                .filter(|&n| (1..=1000).contains(&n))
                .ok_or_else(|| at(r.span(), "repeat is not 1 to 1000".into()))?,
        };
        let timeout = match &raw.experiment.as_ref().and_then(|e| e.timeout.clone()) {
            None => None,
            Some(t) => Some(
                crate::parse_duration(t.get_ref())
                    .map_err(|e| at(t.span(), format!("timeout: {e}")))?,
            ),
        };
        let metrics = raw.metric.0.iter().map(|(name, _)| name.clone()).collect();
        let swept = vary
            .iter()
            .filter(|(_, values): &&(String, Vec<String>)| values.len() > 1)
            .map(|(name, _)| name.clone())
            .collect();
        // Absolute, as the VMs run in it (for relative mounts).
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        Ok(Self {
            name: raw.name.get_ref().clone(),
            vary,
            swept,
            metrics,
            repeat,
            timeout,
            raw,
            text: text.to_owned(),
            dir,
        })
    }

    /// Give each variable in `sets` only that value (`--set`).
    pub(crate) fn restrict(&mut self, sets: &[(String, String)]) -> Result<()> {
        for (key, value) in sets {
            let Some((_, values)) = self.vary.iter_mut().find(|(k, _)| k == key) else {
                return Err(unknown_variable(key));
            };
            *values = vec![value.clone()];
        }
        Ok(())
    }

    /// Every combination of the `[vary]` values, the first variable
    /// varying slowest; one empty combination without `[vary]`.
    pub(crate) fn combinations(&self) -> Vec<Vec<(String, String)>> {
        let mut all = vec![Vec::new()];
        for (key, values) in &self.vary {
            all = all
                .into_iter()
                .flat_map(|done: Vec<(String, String)>| {
                    values.iter().map(move |v| {
                        let mut next = done.clone();
                        next.push((key.clone(), v.clone()));
                        next
                    })
                })
                .collect();
        }
        all
    }

    /// The plan for one combination: `sets` gives a value to every
    /// `[vary]` variable (`--set` on the command line; a variable not set
    /// takes its first value).
    pub(crate) fn plan(&self, sets: &[(String, String)]) -> Result<Plan> {
        if let Some((key, _)) = sets
            .iter()
            .find(|(key, _)| !self.vary.iter().any(|(k, _)| k == key))
        {
            return Err(unknown_variable(key));
        }
        let values: Vec<(String, String)> = self
            .vary
            .iter()
            .map(|(key, values)| {
                let value = sets
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map_or(&values[0], |(_, v)| v);
                (key.clone(), value.clone())
            })
            .collect();
        Planner {
            text: &self.text,
            values: &values,
        }
        .plan(self)
    }
}

fn unknown_variable(name: &str) -> FileError {
    FileError {
        line: None,
        message: format!("--set {name}: the scenario's [vary] has no {name}"),
    }
}

/// Expands one combination.
struct Planner<'a> {
    text: &'a str,
    values: &'a [(String, String)],
}

impl Planner<'_> {
    fn error(&self, span: Range<usize>, message: String) -> FileError {
        FileError {
            line: Some(line_of(self.text, span.start)),
            message,
        }
    }

    /// `text` with every `{name}` replaced by the variable's value.
    fn expand(&self, text: &Spanned<String>) -> Result<String> {
        let mut out = String::new();
        let mut rest = text.get_ref().as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(self.error(
                    text.span(),
                    format!("`{}` has a `{{` with no `}}`", text.get_ref()),
                ));
            };
            let name = &after[..close];
            let Some((_, value)) = self.values.iter().find(|(k, _)| k == name) else {
                return Err(self.error(
                    text.span(),
                    format!("{{{name}}} is not a variable of [vary]"),
                ));
            };
            out.push_str(value);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A value that may be written as a string with variables: its text.
    fn expand_value(&self, value: &Spanned<toml::Value>) -> Result<String> {
        match value.get_ref() {
            toml::Value::String(s) => self.expand(&Spanned::new(value.span(), s.clone())),
            toml::Value::Integer(n) => Ok(n.to_string()),
            other => Err(self.error(value.span(), format!("{other} is not a number or a string"))),
        }
    }

    fn number(&self, value: &Spanned<toml::Value>, what: &str, range: Range<u32>) -> Result<u32> {
        let text = self.expand_value(value)?;
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    format!(
                        "{what} `{text}` is not a number from {} to {}",
                        range.start,
                        range.end - 1
                    ),
                )
            })
    }

    fn cpu_list(&self, value: &Spanned<toml::Value>, what: &str) -> Result<Vec<usize>> {
        let text = self.expand_value(value)?;
        eremite_vmm::parse_cpu_list(&text)
            .map_err(|e| self.error(value.span(), format!("{what}: {e}")))
    }

    fn plan(&self, scenario: &Scenario) -> Result<Plan> {
        let raw = &scenario.raw;
        let cpus = match &raw.cpus {
            Some(c) => self.cpu_list(c, "cpus")?,
            None => Vec::new(),
        };
        let mut names = BTreeSet::new();
        let mut copies = Vec::new();
        let mut taken = BTreeSet::new();
        for instance in &raw.instance {
            let name = instance.name.get_ref();
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !is_name {
                return Err(self.error(
                    instance.name.span(),
                    format!("instance name `{name}` is not letters, digits, - and _"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.error(
                    instance.name.span(),
                    format!("two instances are named {name}"),
                ));
            }
            let count = match &instance.count {
                Some(c) => Some(self.number(c, "count", 1..65)?),
                None => None,
            };
            let vcpus = match &instance.cpus {
                Some(c) => self.number(c, "cpus", 1..17)?,
                None => 1,
            };
            let image_text = self.expand(&instance.image)?;
            let image = scenario.dir.join(&image_text);
            if !image.is_file() {
                return Err(self.error(
                    instance.image.span(),
                    format!("image {} is not a file", image.display()),
                ));
            }
            let memory_bytes = match &instance.memory {
                Some(m) => {
                    let text = self.expand(m)?;
                    eremite_vmm::parse_memory_size(&text)
                        .map_err(|e| self.error(m.span(), format!("memory: {e}")))?
                }
                None => eremite_vmm::default_memory_bytes(&image),
            };
            let host_cpus = match &instance.host_cpus {
                Some(h) => {
                    let list = self.cpu_list(h, "host_cpus")?;
                    if let Some(outside) =
                        list.iter().find(|c| !cpus.is_empty() && !cpus.contains(c))
                    {
                        return Err(self.error(
                            h.span(),
                            format!("host_cpus names CPU {outside}, outside the scenario's cpus"),
                        ));
                    }
                    list
                }
                None => cpus.clone(),
            };
            let is_exclusive = match &instance.placement {
                None => false,
                Some(p) => match self.expand(p)?.as_str() {
                    "shared" => false,
                    "exclusive" => true,
                    other => {
                        return Err(self.error(
                            p.span(),
                            format!("placement `{other}` is not shared or exclusive"),
                        ));
                    }
                },
            };
            if is_exclusive && host_cpus.is_empty() {
                let span = instance.placement.as_ref().map_or(0..0, Spanned::span);
                return Err(self.error(span, "exclusive placement needs host_cpus or cpus".into()));
            }
            let expect_exit = match &instance.expect_exit {
                Some(e) => self.number(e, "expect_exit", 0..256)? as i32,
                None => 0,
            };
            let strings = |list: &[Spanned<String>]| {
                list.iter()
                    .map(|s| self.expand(s))
                    .collect::<Result<Vec<_>>>()
            };
            let args = strings(&instance.args)?;
            let mounts = strings(&instance.mounts)?;
            let expect_output = strings(&instance.expect_output)?;
            let env = instance
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.expand(v)?)))
                .collect::<Result<Vec<_>>>()?;
            let initrd = instance
                .initrd
                .as_ref()
                .map(|i| self.expand(i))
                .transpose()?;
            let cmdline = instance
                .cmdline
                .as_ref()
                .map(|c| self.expand(c))
                .transpose()?;
            let net_flags = self.net_flags(instance, raw.network.is_some())?;
            let ready_when = instance
                .ready_when
                .as_ref()
                .map(|r| self.expand(r))
                .transpose()?
                .filter(|r| !r.is_empty());
            for i in 0..count.unwrap_or(1) {
                let pin = if is_exclusive {
                    let free: Vec<usize> = host_cpus
                        .iter()
                        .copied()
                        .filter(|c| !taken.contains(c))
                        .collect();
                    if free.len() < vcpus as usize {
                        let span = instance.placement.as_ref().map_or(0..0, Spanned::span);
                        return Err(self.error(
                            span,
                            format!(
                                "exclusive placement of {name}: copy {i} needs {vcpus} host CPUs of its own and {} are left in host_cpus",
                                free.len()
                            ),
                        ));
                    }
                    let mine = free[..vcpus as usize].to_vec();
                    taken.extend(mine.iter().copied());
                    mine
                } else {
                    host_cpus.clone()
                };
                copies.push(Copy {
                    name: match count {
                        Some(_) => format!("{name}-{i}"),
                        None => name.clone(),
                    },
                    instance: name.clone(),
                    image: image.clone(),
                    args: args.clone(),
                    env: env.clone(),
                    vcpus,
                    memory_bytes,
                    pin,
                    mounts: mounts.clone(),
                    initrd: initrd.as_ref().map(|i| scenario.dir.join(i)),
                    cmdline: cmdline.clone(),
                    net_flags: net_flags.clone(),
                    ip: None,
                    expect_exit,
                    expect_output: expect_output.clone(),
                    after: Vec::new(),
                    ready_when: ready_when.clone(),
                });
            }
        }
        self.order(raw, &mut copies)?;
        if let Some(quota) = &raw.memory_quota {
            let bytes = parse_quota(quota.get_ref()).map_err(|e| self.error(quota.span(), e))?;
            let total: u64 = copies.iter().map(|c| c.memory_bytes).sum();
            if total > bytes {
                return Err(self.error(
                    quota.span(),
                    format!(
                        "the instances' memory adds up to {} MiB, over memory_quota ({} MiB)",
                        total >> 20,
                        bytes >> 20
                    ),
                ));
            }
        }
        if let Some(network) = &raw.network {
            self.address(network, &mut copies)?;
        }
        let metrics = raw
            .metric
            .0
            .iter()
            .map(|(name, pattern)| {
                let regex = regex::Regex::new(pattern.get_ref())
                    .map_err(|e| self.error(pattern.span(), format!("metric {name}: {e}")))?;
                if regex.captures_len() < 2 {
                    return Err(self.error(
                        pattern.span(),
                        format!(
                            "metric {name}: the expression has no group ( ) to take the value from"
                        ),
                    ));
                }
                Ok((name.clone(), regex))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            values: self.values.to_vec(),
            swept: scenario.swept.clone(),
            dir: scenario.dir.clone(),
            cpus,
            copies,
            metrics,
            timeout: scenario.timeout,
        })
    }

    /// An instance's own network flags, checked as the CLI checks them.
    fn net_flags(&self, instance: &RawInstance, has_network: bool) -> Result<Vec<String>> {
        let mut flags = Vec::new();
        let checks: [(&str, &Option<Spanned<String>>, FlagCheck); 3] = [
            ("--net", &instance.net, |t| {
                eremite_vmm::parse_net_spec(t)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            ("--ip", &instance.ip, |t| {
                eremite_vmm::parse_ip_prefix(t)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            ("--gateway", &instance.gateway, |t| {
                eremite_vmm::parse_gateway(t)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ];
        let publish = instance.publish.iter().map(|p| ("-p", p));
        let given = checks
            .iter()
            .filter_map(|(flag, value, check)| value.as_ref().map(|v| (*flag, v, Some(*check))))
            .chain(publish.map(|(flag, p)| (flag, p, None)));
        for (flag, value, check) in given {
            if has_network {
                return Err(self.error(
                    value.span(),
                    format!("{flag} in an instance of a scenario with a [network]"),
                ));
            }
            let text = self.expand(value)?;
            let checked = match check {
                Some(check) => check(&text),
                None => eremite_vmm::parse_publish(&text)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            checked.map_err(|e| {
                self.error(
                    value.span(),
                    format!("{}: {e}", flag.trim_start_matches('-')),
                )
            })?;
            flags.extend([flag.to_owned(), text]);
        }
        Ok(flags)
    }

    /// Resolve `after` (an instance's name means all its copies) and
    /// refuse cycles.
    fn order(&self, raw: &RawScenario, copies: &mut [Copy]) -> Result<()> {
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for instance in &raw.instance {
            let mut before = Vec::new();
            for after in &instance.after {
                let target = self.expand(after)?;
                let matched: Vec<&Copy> = copies
                    .iter()
                    .filter(|c| c.name == target || c.instance == target)
                    .collect();
                if matched.is_empty() {
                    return Err(self.error(
                        after.span(),
                        format!("after: no instance is named {target}"),
                    ));
                }
                if let Some(c) = matched.iter().find(|c| c.ready_when.is_none()) {
                    return Err(self.error(
                        after.span(),
                        format!("after: {} has no ready_when line to wait for", c.name),
                    ));
                }
                before.extend(matched.iter().map(|c| c.name.clone()));
            }
            edges.insert(instance.name.get_ref().clone(), before);
        }
        for copy in copies.iter_mut() {
            copy.after = edges.get(&copy.instance).cloned().unwrap_or_default();
        }
        // Depth-first search for a cycle among the copies.
        let index: BTreeMap<&str, usize> = copies
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut state = vec![0u8; copies.len()]; // 0 new, 1 on the path, 2 done
        fn visit(
            i: usize,
            copies: &[Copy],
            index: &BTreeMap<&str, usize>,
            state: &mut [u8],
        ) -> Option<usize> {
            match state[i] {
                1 => return Some(i),
                2 => return None,
                _ => {}
            }
            state[i] = 1;
            for next in &copies[i].after {
                if let Some(cycle) = visit(index[next.as_str()], copies, index, state) {
                    return Some(cycle);
                }
            }
            state[i] = 2;
            None
        }
        for i in 0..copies.len() {
            if let Some(at) = visit(i, copies, &index, &mut state) {
                let instance = &copies[at].instance;
                let span = raw
                    .instance
                    .iter()
                    .find(|r| r.name.get_ref() == instance)
                    .and_then(|r| r.after.first())
                    .map_or(0..0, Spanned::span);
                return Err(self.error(
                    span,
                    format!("after: {instance} waits, through others, for itself"),
                ));
            }
        }
        Ok(())
    }

    /// `[network]`: an address for every copy on the scenario's switch.
    fn address(&self, network: &RawNetwork, copies: &mut [Copy]) -> Result<()> {
        let subnet = &network.subnet;
        let (base, prefix) = eremite_vmm::parse_ip_prefix(subnet.get_ref())
            .map_err(|e| self.error(subnet.span(), format!("subnet: {e}")))?;
        let hosts = if prefix >= 31 {
            0
        } else {
            (1u64 << (32 - prefix)) - 3
        };
        if (copies.len() as u64) > hosts {
            return Err(self.error(
                subnet.span(),
                format!(
                    "subnet {} has room for {hosts} instances, not {}",
                    subnet.get_ref(),
                    copies.len()
                ),
            ));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let network = u32::from(base) & mask;
        for (i, copy) in copies.iter_mut().enumerate() {
            // .1 is left for a gateway; copies from .2 on.
            let host = network + 2 + i as u32;
            copy.ip = Some((std::net::Ipv4Addr::from(host), prefix));
        }
        Ok(())
    }
}

/// `memory_quota`: a size as `--memory` takes it, of any amount.
fn parse_quota(text: &str) -> std::result::Result<u64, String> {
    match eremite_vmm::parse_memory_size(text) {
        Ok(bytes)
        | Err(eremite_vmm::SizeError::Range(bytes) | eremite_vmm::SizeError::Alignment(bytes)) => {
            if bytes == u64::MAX {
                Err(format!("memory_quota `{text}` is too large"))
            } else {
                Ok(bytes)
            }
        }
        Err(e) => Err(format!("memory_quota: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `text` as a file in a directory that holds an image `img`.
    fn parse(text: &str) -> Scenario {
        let dir =
            std::env::temp_dir().join(format!("eremite-scenario-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("img"), b"not an ELF").unwrap();
        Scenario::parse(&dir.join("s.toml"), text).unwrap()
    }

    const SWEEP: &str = r#"
name = "s"
cpus = "0-3"
[vary]
b = [1, 2]
a = ["x", "y", "z"]
[[instance]]
name = "kv"
image = "img"
args = ["--b", "{b}", "{a}{a}"]
count = "{b}"
cpus = 2
memory = "32M"
placement = "exclusive"
"#;

    #[test]
    fn combinations_follow_the_file_order_the_first_slowest() {
        let s = parse(SWEEP);
        let labels: Vec<String> = s
            .combinations()
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            labels,
            [
                "b=1,a=x", "b=1,a=y", "b=1,a=z", "b=2,a=x", "b=2,a=y", "b=2,a=z"
            ]
        );
    }

    #[test]
    fn a_plan_expands_variables_and_carves_exclusive_cpus() {
        let s = parse(SWEEP);
        let plan = s
            .plan(&[("b".into(), "2".into()), ("a".into(), "q".into())])
            .unwrap();
        assert_eq!(plan.label(), "b=2 a=q");
        let names: Vec<&str> = plan.copies.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["kv-0", "kv-1"]);
        assert_eq!(plan.copies[0].args, ["--b", "2", "qq"]);
        assert_eq!(plan.copies[0].pin, [0, 1]);
        assert_eq!(plan.copies[1].pin, [2, 3]);
        assert_eq!(plan.copies[1].memory_bytes, 32 << 20);
        // A third copy would not fit.
        let mut s = parse(&SWEEP.replace("count = \"{b}\"", "count = 3"));
        s.restrict(&[("b".into(), "1".into())]).unwrap();
        let error = s.plan(&[]).unwrap_err();
        assert_eq!(error.line, Some(14), "{error}");
        assert!(s.plan(&[("c".into(), "1".into())]).is_err());
    }

    #[test]
    fn shared_copies_use_the_same_cpus_and_the_network_numbers_them() {
        let s = parse(
            r#"
name = "n"
[network]
subnet = "10.9.0.0/24"
[[instance]]
name = "a"
image = "img"
count = 2
host_cpus = "1,3"
[[instance]]
name = "b"
image = "img"
"#,
        );
        let plan = s.plan(&[]).unwrap();
        assert_eq!(plan.label(), "run");
        let pins: Vec<&[usize]> = plan.copies.iter().map(|c| c.pin.as_slice()).collect();
        assert_eq!(pins, [&[1, 3][..], &[1, 3], &[]]);
        let ips: Vec<String> = plan
            .copies
            .iter()
            .map(|c| format!("{:?}", c.ip.unwrap()))
            .collect();
        assert_eq!(ips, ["(10.9.0.2, 24)", "(10.9.0.3, 24)", "(10.9.0.4, 24)"]);
        assert_eq!(plan.copies[2].name, "b");
    }
}
