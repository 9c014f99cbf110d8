//! Dies of a CPU exception on purpose, so the tests can check that the
//! supervisor reports it: `fault null` reads through a null pointer (page
//! fault), `fault ud2` executes an undefined instruction (invalid opcode),
//! `fault overflow` overflows a thread's stack (built for Linux, std's
//! handler reports that on the signal stack and aborts).

#[cfg(target_os = "hermit")]
use eremite as _;

/// Recurse for ever, with a frame the optimiser cannot drop.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[depth as usize % 64]
}

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
        "overflow" => {
            let thread = std::thread::Builder::new()
                .name("deep".to_owned())
                .stack_size(256 << 10)
                .spawn(|| recurse(0))
                .expect("cannot spawn");
            println!("recursed to {:?}", thread.join());
        }
        other => {
            eprintln!("unknown fault `{other}` (use null, ud2 or overflow)");
            std::process::exit(2);
        }
    }
    println!("still alive after the fault?!");
}
