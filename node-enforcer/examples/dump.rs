//! Prints decoded kernel records for a few seconds (a debugging aid, root): `cargo run -p node-enforcer --example dump -- SECS [--all] [--raw-tp] [--pin-dir DIR] [--deny NAME]` (`--raw-tp` captures syscalls with the raw_tp pair; `--deny` kills NAME at exec in Kubernetes containers; `tether node unload [--pin-dir DIR]` removes the pins afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use node_enforcer::{loader, Enforcer, LoaderOptions};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let all = std::env::args().any(|a| a == "--all");
    let mut opts = LoaderOptions {
        all_cgroups: all,
        ..LoaderOptions::default()
    };
    if std::env::args().any(|a| a == "--raw-tp") {
        opts.syscall_hook = loader::SyscallHook::RawTp;
    }
    if let Some(i) = std::env::args().position(|a| a == "--pin-dir") {
        opts.pin_dir = std::env::args().nth(i + 1).unwrap().into();
    }
    let mut enf = Enforcer::load(&opts).expect("load");
    println!("{:#?}", enf.capabilities());
    println!("{:#?}", enf.attachments());
    println!("syscalls: {}", enf.syscall_capture().describe());
    for p in node_enforcer::node::SENSITIVE_PREFIXES {
        enf.add_sensitive_prefix(p).unwrap();
    }
    if let Some(i) = std::env::args().position(|a| a == "--deny") {
        let name = std::env::args().nth(i + 1).unwrap();
        enf.deny_exec(0, &name, 1).unwrap();
        let r = node_enforcer::cgroups::CgroupResolver::new(enf.cgroup_root());
        for id in r.kubepods_ids() {
            enf.watch_cgroup(id).unwrap();
        }
    }
    let mut ring = enf.take_ring().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        while let Some(item) = ring.next() {
            match node_enforcer::decode(&item) {
                Ok(ev) => println!("{ev:?}"),
                Err(e) => println!("decode error: {e}"),
            }
        }
        loader::wait_readable(&ring, 10);
    }
    println!("{:?}", enf.counters().unwrap());
}
