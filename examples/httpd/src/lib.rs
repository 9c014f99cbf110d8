//! A tiny HTTP/1.1 echo service, shared by the `httpd` (std threads),
//! `mio-httpd` (one event loop) and `tokio-httpd` (async tasks) examples:
//! each request is answered with a plain-text description of itself
//! (method, URL, protocol, Host, remote address, headers, form fields from
//! the query and from an `application/x-www-form-urlencoded` body).
//!
//! [`Session`] is one connection, whatever moves its bytes (a thread, an
//! event loop, an async task): bytes in, answers out, and whether to keep
//! the connection, close it, or stop the server (`/quit`). `/stats`
//! answers with the guest's heap memory in use and its open and closing
//! sockets (zeros natively), for leak checks. [`Parser`] takes bytes as
//! they arrive and yields requests; it bounds what it keeps (headers,
//! body) so a hostile client cannot make it grow without limit, and
//! reports garbage as [`BadRequest`].

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub protocol: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

impl Request {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after the answer.
    pub fn is_keep_alive(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => self.protocol == "HTTP/1.1",
        }
    }

    /// Form fields: the query string's, then the body's if it is a form.
    pub fn form_fields(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        if let Some((_, query)) = self.url.split_once('?') {
            fields.extend(parse_form(query));
        }
        let is_form = self.header("content-type").is_some_and(|t| {
            t.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if is_form {
            fields.extend(parse_form(&String::from_utf8_lossy(&self.body)));
        }
        fields
    }
}

/// `a=1&b=x+y` → pairs, percent-decoded.
fn parse_form(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at..at + 2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if hex(i + 1).is_some() => {
                out.extend(hex(i + 1));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Incremental request parser for one connection.
#[derive(Default)]
pub struct Parser {
    buffer: Vec<u8>,
}

impl Parser {
    /// Add bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete request, `Ok(None)` if more bytes are needed.
    pub fn next_request(&mut self) -> Result<Option<Request>, BadRequest> {
        let Some(head_end) = find(&self.buffer, b"\r\n\r\n") else {
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(BadRequest("request head too large"));
            }
            return Ok(None);
        };
        if head_end > MAX_HEAD_BYTES {
            return Err(BadRequest("request head too large"));
        }
        let head = std::str::from_utf8(&self.buffer[..head_end])
            .map_err(|_| BadRequest("request head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (Some(method), Some(url), Some(protocol), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadRequest("malformed request line"));
        };
        if method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
            || !url.starts_with('/')
            || !matches!(protocol, "HTTP/1.0" | "HTTP/1.1")
        {
            return Err(BadRequest("malformed request line"));
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or(BadRequest("malformed header"))?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(BadRequest("malformed header"));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut request = Request {
            method: method.to_string(),
            url: url.to_string(),
            protocol: protocol.to_string(),
            headers,
            body: Vec::new(),
        };
        if request.header("transfer-encoding").is_some() {
            return Err(BadRequest("chunked bodies are not supported"));
        }
        let body_len = match request.header("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| BadRequest("bad Content-Length"))?,
            None => 0,
        };
        if body_len > MAX_BODY_BYTES {
            return Err(BadRequest("body too large"));
        }
        let body_start = head_end + 4;
        if self.buffer.len() < body_start + body_len {
            return Ok(None);
        }
        request.body = self.buffer[body_start..body_start + body_len].to_vec();
        self.buffer.drain(..body_start + body_len);
        Ok(Some(request))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes a server reads from a connection at a time.
pub const READ_BYTES: usize = 16 << 10;

/// What a connection does once its answers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for more requests.
    KeepOpen,
    /// Close the connection: the client asked to, or sent garbage.
    Close,
    /// Close it and stop the server: the client asked for `/quit`.
    Quit,
}

/// One connection's requests and answers.
pub struct Session {
    parser: Parser,
    remote: SocketAddr,
}

impl Session {
    /// A connection from `remote`.
    pub fn new(remote: SocketAddr) -> Self {
        Self {
            parser: Parser::default(),
            remote,
        }
    }

    /// Take bytes that arrived: the answers to the requests they
    /// complete, and what to do once those are written. Requests after
    /// one that closes the connection are not answered.
    pub fn receive(&mut self, bytes: &[u8]) -> (Vec<u8>, Next) {
        self.parser.push(bytes);
        let mut answers = Vec::new();
        loop {
            match self.parser.next_request() {
                Ok(Some(request)) => {
                    let is_keep_alive = request.is_keep_alive();
                    answers.extend(match request.url.as_str() {
                        "/stats" => plain(&stats(), is_keep_alive),
                        _ => respond(&request, self.remote),
                    });
                    if request.url == "/quit" {
                        return (answers, Next::Quit);
                    }
                    if !is_keep_alive {
                        return (answers, Next::Close);
                    }
                }
                Ok(None) => return (answers, Next::KeepOpen),
                Err(why) => {
                    answers.extend(bad_request(why));
                    return (answers, Next::Close);
                }
            }
        }
    }
}

/// What `/stats` answers.
fn stats() -> String {
    #[cfg(target_os = "hermit")]
    let (heap, open, closing) = (
        eremite::stats::heap_in_use_bytes(),
        eremite::stats::open_sockets(),
        eremite::stats::closing_sockets(),
    );
    #[cfg(not(target_os = "hermit"))]
    let (heap, open, closing) = (0, 0, 0);
    format!("heap_in_use: {heap}\nopen_sockets: {open}\nclosing_sockets: {closing}\n")
}

/// The answer to `request` from `remote`: a full HTTP response.
pub fn respond(request: &Request, remote: SocketAddr) -> Vec<u8> {
    let mut text = String::new();
    let _ = writeln!(text, "method: {}", request.method);
    let _ = writeln!(text, "url: {}", request.url);
    let _ = writeln!(text, "protocol: {}", request.protocol);
    let _ = writeln!(text, "host: {}", request.header("host").unwrap_or(""));
    let _ = writeln!(text, "remote: {remote}");
    for (name, value) in &request.headers {
        let _ = writeln!(text, "header: {name}: {value}");
    }
    for (name, value) in request.form_fields() {
        let _ = writeln!(text, "form: {name}={value}");
    }
    plain(&text, request.is_keep_alive())
}

/// A `200 OK` response carrying `text`.
pub fn plain(text: &str, is_keep_alive: bool) -> Vec<u8> {
    let connection = if is_keep_alive { "keep-alive" } else { "close" };
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    response.extend_from_slice(text.as_bytes());
    response
}

/// The answer to a request that could not be parsed.
pub fn bad_request(why: BadRequest) -> Vec<u8> {
    let text = format!("bad request: {}\n", why.0);
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Request>, BadRequest> {
        let mut parser = Parser::default();
        let mut requests = Vec::new();
        // Byte by byte, as the slowest client would send it.
        for &b in input {
            parser.push(&[b]);
            while let Some(r) = parser.next_request()? {
                requests.push(r);
            }
        }
        Ok(requests)
    }

    #[test]
    fn pipelined_requests_with_bodies_and_forms() {
        let input = b"POST /submit?a=1&b=x%20y HTTP/1.1\r\nHost: h:80\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nname=eve+ok\
GET / HTTP/1.0\r\n\r\n";
        let requests = parse_all(input).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].header("HOST"), Some("h:80"));
        assert_eq!(
            requests[0].form_fields(),
            [("a", "1"), ("b", "x y"), ("name", "eve ok")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert!(requests[0].is_keep_alive());
        assert!(!requests[1].is_keep_alive());
        let text = String::from_utf8(respond(&requests[0], "1.2.3.4:5".parse().unwrap())).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("\nremote: 1.2.3.4:5\n"));
        assert!(text.contains("\nform: name=eve ok\n"));
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for input in [
            &b"\x00\x01\x02 garbage\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/9\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(parse_all(input).is_err(), "{input:?}");
        }
        assert!(parse_all(&vec![b'a'; MAX_HEAD_BYTES + 10]).is_err());
    }

    #[test]
    fn a_session_answers_pipelined_requests_until_one_ends_it() {
        let remote = "1.2.3.4:5".parse().unwrap();
        let mut session = Session::new(remote);
        let (answers, next) = session.receive(b"GET /a HTTP/1.1\r\n\r\nGET /st");
        assert_eq!(next, Next::KeepOpen);
        assert_eq!(
            String::from_utf8(answers)
                .unwrap()
                .matches(" 200 OK")
                .count(),
            1
        );
        let (answers, next) = session
            .receive(b"ats HTTP/1.1\r\n\r\nGET /quit HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(answers).unwrap();
        assert_eq!(next, Next::Quit);
        assert_eq!(text.matches(" 200 OK").count(), 2, "{text}");
        assert!(text.contains("\nclosing_sockets: 0\n"), "{text}");
        assert!(!text.contains("url: /b"), "{text}");

        let (answers, next) = Session::new(remote).receive(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(next, Next::Close);
        assert!(answers.starts_with(b"HTTP/1.1 200 OK"));
        let (answers, next) = Session::new(remote).receive(b"garbage\r\n\r\n");
        assert_eq!(next, Next::Close);
        assert!(answers.starts_with(b"HTTP/1.1 400 "));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
