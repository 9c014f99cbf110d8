//! `clap` on eremite: a small use of it that prints `ok clap`.
#[cfg(target_os = "hermit")]
use eremite as _;
#[derive(clap::Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 3)]
    count: u32,
    name: Option<String>,
}
fn main() {
    use clap::Parser;
    let args = Args::parse_from(["prog", "--count", "5", "world"]);
    assert_eq!(args.count, 5);
    let own = Args::parse();
    println!("ok clap {args:?} {own:?}");
}
