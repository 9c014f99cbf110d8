//! `redb` on eremite: a small use of it that prints `ok redb`.
#[cfg(target_os = "hermit")]
use eremite as _;
const TABLE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");
fn main() {
    let db = redb::Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(TABLE).unwrap();
        t.insert("a", 1).unwrap();
        t.insert("b", 2).unwrap();
    }
    w.commit().unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(TABLE).unwrap();
    assert_eq!(t.get("b").unwrap().unwrap().value(), 2);
    println!("ok redb (in memory)");
}
