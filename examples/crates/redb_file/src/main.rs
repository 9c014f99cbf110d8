//! `redb_file` on eremite: a small use of it that prints `ok redb_file`.
#[cfg(target_os = "hermit")]
use eremite as _;
const TABLE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");
fn main() {
    let db = redb::Database::create("/data.redb").unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(TABLE).unwrap();
        t.insert("a", 1).unwrap();
    }
    w.commit().unwrap();
    println!("ok redb_file");
}
