//! Function names for guest addresses, from the symbol tables of the ELF
//! files the VMM loaded (the image, with the kernel's functions among its
//! local symbols; a Linux program and eremite's Linux kernel), demangled.

use goblin::elf::{Elf, sym};

/// Named address ranges, sorted by start.
#[derive(Debug, Default)]
pub struct Symbols {
    /// Start, end (exclusive; equal to start for a symbol with no size,
    /// which then reaches to the next) and demangled name.
    functions: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// Add the functions of the ELF file `bytes`, loaded with its
    /// addresses moved by `bias`. A file that does not parse, or has no
    /// symbol table (stripped), adds none.
    pub(crate) fn add_elf(&mut self, bytes: &[u8], bias: u64) {
        let Ok(elf) = Elf::parse(bytes) else {
            return;
        };
        let is_code_section = |index: usize| {
            elf.section_headers
                .get(index)
                .is_some_and(|section| section.is_executable())
        };
        for symbol in elf.syms.iter() {
            // Functions, and the labels of hand-written assembly (the
            // CPL0 entry stubs), which have no type or size.
            let is_code = symbol.st_type() == sym::STT_FUNC
                || (symbol.st_type() == sym::STT_NOTYPE && is_code_section(symbol.st_shndx));
            if !is_code || symbol.st_value == 0 {
                continue;
            }
            let Some(name) = elf.strtab.get_at(symbol.st_name) else {
                continue;
            };
            let begin = symbol.st_value.wrapping_add(bias);
            self.functions
                .push((begin, begin.saturating_add(symbol.st_size), demangle(name)));
        }
        self.functions.sort_by_key(|f| f.0);
    }

    /// Add one function (for tests).
    #[cfg(test)]
    pub(crate) fn add_function(&mut self, start: u64, end: u64, name: &str) {
        self.functions.push((start, end, name.to_owned()));
        self.functions.sort_by_key(|f| f.0);
    }

    /// The name of the function that holds `addr`, or `[unknown]`.
    pub(crate) fn name(&self, addr: u64) -> String {
        self.function(addr)
            .map_or_else(|| "[unknown]".to_string(), |(_, name)| name.to_string())
    }

    /// The start and name of the function that holds `addr`.
    pub(crate) fn function(&self, addr: u64) -> Option<(u64, &str)> {
        let index = self.functions.partition_point(|f| f.0 <= addr);
        match index.checked_sub(1).map(|i| &self.functions[i]) {
            Some((start, end, name)) if addr < *end || start == end => Some((*start, name)),
            _ => None,
        }
    }
}

/// A Rust (or C) symbol as people read it: demangled, without the hash,
/// and with no `;` (the folded format's separator).
pub(crate) fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name)).replace(';', ":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_demangled_without_the_hash() {
        assert_eq!(
            demangle("_RNvCsjjMHXUidash_5httpd5serve.llvm.12960147321879002935"),
            "httpd::serve"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
        assert_eq!(
            demangle("<[u8; 4] as Debug>::fmt"),
            "<[u8: 4] as Debug>::fmt"
        );
    }

    #[test]
    fn an_address_gets_the_function_around_it() {
        let symbols = Symbols {
            functions: vec![
                (0x1000, 0x1010, "a".into()),
                (0x1010, 0x1010, "sized_zero".into()),
                (0x2000, 0x2100, "b".into()),
            ],
        };
        assert_eq!(symbols.name(0x1000), "a");
        assert_eq!(symbols.name(0x100f), "a");
        assert_eq!(symbols.name(0x1500), "sized_zero");
        assert_eq!(symbols.name(0x20ff), "b");
        assert_eq!(symbols.name(0x2100), "[unknown]");
        assert_eq!(symbols.name(0xfff), "[unknown]");
    }

    #[test]
    fn the_test_image_names_its_functions_where_it_was_loaded() {
        let image = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let mut symbols = Symbols::default();
        symbols.add_elf(&image, 0x40_0000);
        assert!(symbols.functions.windows(2).all(|w| w[0].0 <= w[1].0));
        let (start, _, _) = symbols
            .functions
            .iter()
            .find(|f| {
                f.2.ends_with("symbols::tests::an_address_gets_the_function_around_it")
            })
            .expect("this test's functions are named");
        assert!(*start >= 0x40_0000);
    }
}
