//! Dies of a CPU exception on purpose, so the tests can check that the
//! supervisor reports it: `fault null` reads through a null pointer (page
//! fault), `fault ud2` executes an undefined instruction (invalid opcode).

use eremite as _;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "null".to_owned());
    println!("about to fault: {what}");
    match what.as_str() {
        "null" => {
            let address = std::hint::black_box(0x10usize) as *const u64;
            // SAFETY: not safe at all: reading unmapped page 0 is the point.
            let value = unsafe { address.read_volatile() };
            println!("read {value} from a null pointer?!");
        }
        // SAFETY: `ud2` only raises #UD, which is the point.
        "ud2" => unsafe { core::arch::asm!("ud2") },
        other => {
            eprintln!("unknown fault `{other}` (use null or ud2)");
            std::process::exit(2);
        }
    }
    println!("still alive after the fault?!");
}
