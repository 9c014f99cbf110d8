//! `walkdir` on eremite: a small use of it that prints `ok walkdir`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    for d in ["/tree/a/b", "/tree/c"] {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in ["/tree/a/one", "/tree/a/b/two", "/tree/c/three"] {
        std::fs::write(f, b"x").unwrap();
    }
    let mut files: Vec<String> = walkdir::WalkDir::new("/tree")
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["/tree/a/b/two", "/tree/a/one", "/tree/c/three"]);
    println!("ok walkdir {}", files.len());
}
