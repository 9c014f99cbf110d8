//! `rusqlite` on eremite: a small use of it that prints `ok rusqlite`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute("CREATE TABLE t (x INTEGER)", ()).unwrap();
    db.execute("INSERT INTO t VALUES (42)", ()).unwrap();
    let x: i64 = db.query_row("SELECT x FROM t", (), |r| r.get(0)).unwrap();
    println!("ok rusqlite {x}");
}
