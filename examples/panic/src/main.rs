//! Panics: the message must reach the host's stderr and the VMM must exit
//! with the documented code for an abort.

use eremite as _;

fn main() {
    println!("about to panic");
    let items: Vec<u32> = Vec::new();
    if items.is_empty() {
        panic!("the list was empty (as planned)");
    }
}
