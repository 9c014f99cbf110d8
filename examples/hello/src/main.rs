//! Greets, shows its arguments and one environment variable, does a little
//! arithmetic work, and exits with the code given as `--exit CODE`. With
//! `--random` it also prints a hash keyed by std's random `HashMap` seed.

#[cfg(target_os = "hermit")]
use eremite as _;

fn main() {
    println!("Hello from eremite!");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {:?}", &args[1..]);
    match std::env::var("GREETING") {
        Ok(value) => println!("GREETING={value}"),
        Err(_) => println!("GREETING is not set"),
    }
    // A few million instructions: fast at CPL3, seconds if it ran emulated.
    let mut x: u64 = 1;
    for i in 0..5_000_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    println!("checksum: {x:#018x}");
    let two = std::hint::black_box(2.0f64);
    println!(
        "sqrt(2) = {:.6}, tan(2) = {:.6}, cosh(2) = {:.6}",
        two.sqrt(),
        two.tan(),
        two.cosh()
    );
    if args.iter().any(|a| a == "--random") {
        use std::hash::BuildHasher;
        let seeded = std::collections::hash_map::RandomState::new();
        println!("random: {:016x}", seeded.hash_one(0u8));
    }
    if let Some(pos) = args.iter().position(|a| a == "--exit") {
        let code = args.get(pos + 1).and_then(|c| c.parse().ok()).unwrap_or(1);
        std::process::exit(code);
    }
}
