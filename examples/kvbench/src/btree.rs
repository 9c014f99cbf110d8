//! A concurrent B-tree index in the style of Lehman and Yao's B-link tree
//! ("Efficient locking for concurrent operations on B-trees", TODS 1981):
//! every node has a high key and a link to its right sibling, so a reader
//! or writer holds one node's lock at a time and a node that split under
//! it is caught up with by moving right. Keys and values are `u64`.

use std::sync::{Arc, Mutex, RwLock};

/// Entries a node holds before it splits.
const FANOUT: usize = 64;

type NodeRef = Arc<RwLock<Node>>;

struct Node {
    /// 0 for leaves, counting up to the root.
    level: u32,
    /// Sorted. In an inner node, `children[i]` holds the keys below
    /// `keys[i]` (and at or above `keys[i - 1]`).
    keys: Vec<u64>,
    /// A leaf's values, one per key.
    values: Vec<u64>,
    /// An inner node's children, one more than its keys.
    children: Vec<NodeRef>,
    /// Every key in this node is below this (`None`: no bound).
    high: Option<u64>,
    /// The node holding the keys from `high` on.
    right: Option<NodeRef>,
}

impl Node {
    fn new(level: u32) -> Self {
        Self {
            level,
            keys: Vec::with_capacity(FANOUT + 1),
            values: Vec::new(),
            children: Vec::new(),
            high: None,
            right: None,
        }
    }

    /// Whether `key` belongs to a node to the right.
    fn is_past(&self, key: u64) -> bool {
        self.high.is_some_and(|high| key >= high)
    }

    /// The child to follow for `key`.
    fn child_for(&self, key: u64) -> NodeRef {
        let i = self.keys.partition_point(|&k| k <= key);
        Arc::clone(&self.children[i])
    }

    /// Move the upper half into a new right sibling; the key that now
    /// separates the two, and the sibling.
    fn split(&mut self) -> (u64, NodeRef) {
        let mid = self.keys.len() / 2;
        let mut right = Node::new(self.level);
        let separator = if self.level == 0 {
            right.keys = self.keys.split_off(mid);
            right.values = self.values.split_off(mid);
            right.keys[0]
        } else {
            right.keys = self.keys.split_off(mid + 1);
            right.children = self.children.split_off(mid + 1);
            self.keys.pop().expect("an inner node that splits has keys")
        };
        right.high = self.high;
        right.right = self.right.take();
        let right = Arc::new(RwLock::new(right));
        self.high = Some(separator);
        self.right = Some(Arc::clone(&right));
        (separator, right)
    }
}

/// The index.
pub struct BTree {
    root: Mutex<NodeRef>,
}

impl Default for BTree {
    fn default() -> Self {
        Self {
            root: Mutex::new(Arc::new(RwLock::new(Node::new(0)))),
        }
    }
}

impl BTree {
    fn root(&self) -> NodeRef {
        Arc::clone(&self.root.lock().expect("root lock"))
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        let mut node = self.root();
        loop {
            let next = {
                let n = node.read().expect("node lock");
                if n.is_past(key) {
                    Arc::clone(
                        n.right
                            .as_ref()
                            .expect("a bounded node has a right sibling"),
                    )
                } else if n.level == 0 {
                    return n.keys.binary_search(&key).ok().map(|i| n.values[i]);
                } else {
                    n.child_for(key)
                }
            };
            node = next;
        }
    }

    /// The node at `level` whose range holds `key`, and the inner nodes
    /// passed on the way down (nearest last).
    fn descend(&self, key: u64, level: u32) -> (NodeRef, Vec<NodeRef>) {
        let mut path = Vec::new();
        let mut node = self.root();
        loop {
            let next = {
                let n = node.read().expect("node lock");
                if n.is_past(key) {
                    Arc::clone(
                        n.right
                            .as_ref()
                            .expect("a bounded node has a right sibling"),
                    )
                } else if n.level == level {
                    break;
                } else {
                    path.push(Arc::clone(&node));
                    n.child_for(key)
                }
            };
            node = next;
        }
        (node, path)
    }

    /// Set `key` to `value`.
    pub fn insert(&self, key: u64, value: u64) {
        let (mut node, mut path) = self.descend(key, 0);
        // The entry to add at the current level: (key, value or child).
        let mut entry = (key, Entry::Value(value));
        let mut level = 0;
        loop {
            let mut n = node.write().expect("node lock");
            while n.is_past(entry.0) {
                let right = Arc::clone(
                    n.right
                        .as_ref()
                        .expect("a bounded node has a right sibling"),
                );
                drop(n);
                node = right;
                n = node.write().expect("node lock");
            }
            match entry.1 {
                Entry::Value(value) => match n.keys.binary_search(&entry.0) {
                    Ok(i) => {
                        n.values[i] = value;
                        return;
                    }
                    Err(i) => {
                        n.keys.insert(i, entry.0);
                        n.values.insert(i, value);
                    }
                },
                Entry::Child(ref child) => {
                    let i = n.keys.partition_point(|&k| k < entry.0);
                    n.keys.insert(i, entry.0);
                    n.children.insert(i + 1, Arc::clone(child));
                }
            }
            if n.keys.len() <= FANOUT {
                return;
            }
            let (separator, right) = n.split();
            drop(n);
            entry = (separator, Entry::Child(right));
            level += 1;
            node = match path.pop() {
                Some(parent) => parent,
                None => match self.grow(&node, separator, &entry.1, level) {
                    Some(parent) => parent,
                    None => return,
                },
            };
        }
    }

    /// `split` split and had no parent on the path: make a new root over
    /// it and `right` if it is still the root (`None`: done), or find its
    /// parent level under the root that another thread made.
    fn grow(&self, split: &NodeRef, separator: u64, right: &Entry, level: u32) -> Option<NodeRef> {
        let Entry::Child(right) = right else {
            unreachable!("only a child moves up");
        };
        let mut root = self.root.lock().expect("root lock");
        if Arc::ptr_eq(&root, split) {
            let mut top = Node::new(level);
            top.keys.push(separator);
            top.children = vec![Arc::clone(split), Arc::clone(right)];
            *root = Arc::new(RwLock::new(top));
            return None;
        }
        drop(root);
        Some(self.descend(separator, level).0)
    }
}

enum Entry {
    Value(u64),
    Child(NodeRef),
}
