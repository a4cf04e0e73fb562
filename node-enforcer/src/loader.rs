//! Loads the kernel programs, pins them under `/sys/fs/bpf/tether`, re-adopts pins left by a
//! previous run, and applies the kernel-side commands (deny exec, isolate a cgroup, tag a
//! session, watch a cgroup).
//!
//! Pin layout: `PIN_DIR/maps/<map>` (every map of `tether.bpf.c`), `PIN_DIR/links/<program>`
//! (one link per attached program). A link pinned in bpffs keeps its program attached while
//! no loader runs, so enforcement holds across a restart; `unload` removes the directory.
//! The pinned `build_info` map holds a hash of the object whose links are pinned: a restart
//! of the same build re-adopts those links untouched; another build attaches its own
//! programs first and then replaces the old pins.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use serde::Serialize;

use crate::abi;
use crate::prefilter::WriteFilter;
use crate::probe::{error_text, Capabilities};

static TETHER_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tether.bpf.o"));

/// Where programs, maps and links are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/tether";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tether node must run as root (it loads eBPF programs); running as uid {0}")]
    NotRoot(u32),
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(String),
    #[error("bpffs at {path}: {what}")]
    BpfFs { path: PathBuf, what: String },
    #[error("no cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroup2,
    #[error("tp_btf programs cannot be loaded here ({0}): process lifecycle cannot be observed")]
    NoTpBtf(String),
    #[error("loading the object: {0} (pins from an incompatible build may exist: run `tether node unload`)")]
    Object(String),
    #[error("program {program}: {what}")]
    Program { program: String, what: String },
    #[error("map {map}: {what}")]
    Map { map: String, what: String },
    #[error("{path}: {what}")]
    Io { path: PathBuf, what: String },
}

/// How one program is attached.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub program: String,
    /// `tp_btf/sched_process_exec`, `raw_tp/sys_enter`, `cgroup/connect4`, `lsm/file_open`...
    pub hook: String,
    /// `attached` now, `adopted` (pinned link of an earlier run, same build), or `unavailable`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Options of the loader.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub pin_dir: PathBuf,
    /// Report every cgroup's syscalls (host processes too), not only containers'.
    pub all_cgroups: bool,
    /// Force a consumer wakeup once this many bytes wait in the ring buffer.
    pub wakeup_bytes: u64,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(PIN_DIR),
            all_cgroups: false,
            wakeup_bytes: 1 << 20,
        }
    }
}

/// Lost, filtered and emitted event counts, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub emitted: u64,
    pub lost: u64,
    pub filtered: u64,
    pub exec_killed: u64,
    pub net_denied: u64,
    pub pending_full: u64,
    /// Per CPU: `[emitted, lost, filtered]`.
    pub per_cpu: Vec<[u64; 3]>,
}

struct Prog {
    name: &'static str,
    kind: Kind,
    /// LSM programs load only where the probe says so; the rest are required.
    needs: Need,
}

#[derive(Clone, Copy)]
enum Kind {
    TpBtf(&'static str),
    RawTp(&'static str),
    SockAddr(&'static str),
    Lsm(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Always,
    SockAddr,
    Lsm,
}

const PROGRAMS: &[Prog] = &[
    Prog {
        name: "tether_exec",
        kind: Kind::TpBtf("sched_process_exec"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_fork",
        kind: Kind::TpBtf("sched_process_fork"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_exit",
        kind: Kind::TpBtf("sched_process_exit"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_cgroup_mkdir",
        kind: Kind::TpBtf("cgroup_mkdir"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_sys_enter",
        kind: Kind::RawTp("sys_enter"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_sys_exit",
        kind: Kind::RawTp("sys_exit"),
        needs: Need::Always,
    },
    Prog {
        name: "tether_connect4",
        kind: Kind::SockAddr("connect4"),
        needs: Need::SockAddr,
    },
    Prog {
        name: "tether_connect6",
        kind: Kind::SockAddr("connect6"),
        needs: Need::SockAddr,
    },
    Prog {
        name: "tether_sendmsg4",
        kind: Kind::SockAddr("sendmsg4"),
        needs: Need::SockAddr,
    },
    Prog {
        name: "tether_sendmsg6",
        kind: Kind::SockAddr("sendmsg6"),
        needs: Need::SockAddr,
    },
    Prog {
        name: "tether_lsm_exec",
        kind: Kind::Lsm("bprm_check_security"),
        needs: Need::Lsm,
    },
    Prog {
        name: "tether_lsm_file_open",
        kind: Kind::Lsm("file_open"),
        needs: Need::Lsm,
    },
];

impl Kind {
    fn hook(self) -> String {
        match self {
            Kind::TpBtf(t) => format!("tp_btf/{t}"),
            Kind::RawTp(t) => format!("raw_tp/{t}"),
            Kind::SockAddr(t) => format!("cgroup/{t}"),
            Kind::Lsm(t) => format!("lsm/{t}"),
        }
    }
}

/// The loaded, attached and pinned kernel side.
pub struct Enforcer {
    _ebpf: Ebpf,
    caps: Capabilities,
    attachments: Vec<Attachment>,
    adopted: bool,
    pin_dir: PathBuf,
    cgroup_root: PathBuf,
    ring: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    settings: Array<MapData, abi::Config>,
    watched: BpfHashMap<MapData, u64, u8>,
    deny_exec: BpfHashMap<MapData, abi::DenyKey, abi::DenyVal>,
    isolated: BpfHashMap<MapData, u64, u32>,
    sessions: BpfHashMap<MapData, u32, u64>,
    sensitive: LpmTrie<MapData, abi::PathKeyData, u32>,
    deny_write: LpmTrie<MapData, abi::PathKeyData, u32>,
    write_prefixes: LpmTrie<MapData, abi::PathKeyData, u32>,
    write_suffixes: LpmTrie<MapData, abi::PathKeyData, u32>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("pin_dir", &self.pin_dir)
            .field("adopted", &self.adopted)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

/// A hash of the embedded object: links pinned by the same build are re-adopted as they are.
pub fn build_id() -> u64 {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in TETHER_OBJ {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn require_root() -> Result<(), LoadError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(LoadError::NotRoot(uid));
    }
    Ok(())
}

/// The cgroup2 mount point (`/sys/fs/cgroup/unified` in a hybrid layout, `/sys/fs/cgroup`
/// in a unified one).
pub fn cgroup2_root() -> Result<PathBuf, LoadError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| LoadError::Io {
        path: "/proc/self/mountinfo".into(),
        what: e.to_string(),
    })?;
    for line in info.lines() {
        // ... mount-point ... - fstype source options
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(mp) = left.split_whitespace().nth(4) {
                return Ok(PathBuf::from(mp));
            }
        }
    }
    Err(LoadError::NoCgroup2)
}

/// Makes sure a bpffs is mounted at the parent of `pin_dir` (mounting one at
/// `/sys/fs/bpf` if nothing is) and creates the pin directories.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), LoadError> {
    let base = pin_dir.parent().unwrap_or(Path::new("/sys/fs/bpf"));
    if !is_bpffs(base) {
        let src = c"bpf";
        let target = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).map_err(|_| {
            LoadError::BpfFs {
                path: base.into(),
                what: "path contains a NUL byte".into(),
            }
        })?;
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(LoadError::BpfFs {
                path: base.into(),
                what: format!(
                    "not a bpffs and mounting one failed: {}",
                    std::io::Error::last_os_error()
                ),
            });
        }
        tracing::info!(path = %base.display(), "mounted bpffs");
    }
    for sub in ["maps", "links"] {
        let d = pin_dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| LoadError::Io {
            path: d.clone(),
            what: e.to_string(),
        })?;
    }
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

impl Enforcer {
    /// Probes, loads, attaches and pins; or re-adopts the pins of an earlier run of the same
    /// build (no gap in enforcement: the pinned links were never detached).
    pub fn load(opts: &LoaderOptions) -> Result<Enforcer, LoadError> {
        require_root()?;
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(error_text(&e)))?;
        let cgroup_root = cgroup2_root()?;
        let caps = Capabilities::probe(&btf, &cgroup_root);
        if let Some(r) = caps.tp_btf.reason() {
            return Err(LoadError::NoTpBtf(r.to_string()));
        }
        ensure_bpffs(&opts.pin_dir)?;
        let maps_dir = opts.pin_dir.join("maps");
        let links_dir = opts.pin_dir.join("links");

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&maps_dir)
            .load(TETHER_OBJ)
            .map_err(|e| LoadError::Object(error_text(&e)))?;

        let mut build_info: Array<MapData, u64> = Array::try_from(take(&mut ebpf, "build_info")?)
            .map_err(|e| map_err("build_info", &e))?;
        let pinned_build = build_info.get(&0, 0).ok().filter(|b| *b != 0);
        let same_build = pinned_build == Some(build_id());
        let mut attachments = Vec::new();
        let mut adopted_any = false;
        let mut fresh_links: Vec<(PathBuf, FdLink)> = Vec::new();
        for prog in PROGRAMS {
            let hook = prog.kind.hook();
            let unavailable = match prog.needs {
                Need::Always => None,
                Need::SockAddr => caps.cgroup_sock_addr.reason(),
                Need::Lsm => caps.bpf_lsm.reason(),
            };
            let link_path = links_dir.join(prog.name);
            if let Some(reason) = unavailable {
                // a pin from a kernel that allowed it cannot exist here; drop a stale one
                let _ = std::fs::remove_file(&link_path);
                attachments.push(Attachment {
                    program: prog.name.into(),
                    hook,
                    state: "unavailable".into(),
                    reason: Some(reason.to_string()),
                });
                continue;
            }
            if same_build && link_path.exists() {
                match PinnedLink::from_pin(&link_path) {
                    Ok(_link) => {
                        // dropping our handle leaves the pin, and the attachment, in place
                        adopted_any = true;
                        attachments.push(Attachment {
                            program: prog.name.into(),
                            hook,
                            state: "adopted".into(),
                            reason: None,
                        });
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(program = prog.name, error = %error_text(&e), "pinned link unreadable; attaching anew");
                    }
                }
            }
            let link = attach(&mut ebpf, prog, &btf, &cgroup_root)?;
            fresh_links.push((link_path, link));
            attachments.push(Attachment {
                program: prog.name.into(),
                hook,
                state: "attached".into(),
                reason: None,
            });
        }
        // The new links are attached: now replace old pins (an upgrade, or a first start).
        for (path, link) in fresh_links {
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| LoadError::Io {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            link.pin(&path).map_err(|e| LoadError::Program {
                program: name,
                what: format!("pinning link at {}: {}", path.display(), error_text(&e)),
            })?;
        }
        build_info
            .set(0, build_id(), 0)
            .map_err(|e| map_err("build_info", &e))?;

        let ring =
            RingBuf::try_from(take(&mut ebpf, "events")?).map_err(|e| map_err("events", &e))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "counters")?)
            .map_err(|e| map_err("counters", &e))?;
        let mut settings: Array<MapData, abi::Config> =
            Array::try_from(take(&mut ebpf, "settings")?).map_err(|e| map_err("settings", &e))?;
        let watched = BpfHashMap::try_from(take(&mut ebpf, "watched_cgroups")?)
            .map_err(|e| map_err("watched_cgroups", &e))?;
        let deny_exec = BpfHashMap::try_from(take(&mut ebpf, "deny_exec")?)
            .map_err(|e| map_err("deny_exec", &e))?;
        let isolated = BpfHashMap::try_from(take(&mut ebpf, "isolated_cgrps")?)
            .map_err(|e| map_err("isolated_cgrps", &e))?;
        let sessions = BpfHashMap::try_from(take(&mut ebpf, "session_tags")?)
            .map_err(|e| map_err("session_tags", &e))?;
        let sensitive = LpmTrie::try_from(take(&mut ebpf, "sensitive_paths")?)
            .map_err(|e| map_err("sensitive_paths", &e))?;
        let deny_write = LpmTrie::try_from(take(&mut ebpf, "deny_write")?)
            .map_err(|e| map_err("deny_write", &e))?;
        let write_prefixes = LpmTrie::try_from(take(&mut ebpf, "write_prefixes")?)
            .map_err(|e| map_err("write_prefixes", &e))?;
        let write_suffixes = LpmTrie::try_from(take(&mut ebpf, "write_suffixes")?)
            .map_err(|e| map_err("write_suffixes", &e))?;

        let cfg = abi::Config {
            all_cgroups: u32::from(opts.all_cgroups),
            self_tgid: std::process::id(),
            wakeup_bytes: opts.wakeup_bytes,
            write_filter: 0,
            _pad0: 0,
        };
        settings
            .set(0, cfg, 0)
            .map_err(|e| map_err("settings", &e))?;

        let adopted = adopted_any;
        tracing::info!(
            pin_dir = %opts.pin_dir.display(),
            adopted,
            bpf_lsm = caps.bpf_lsm.is_available(),
            cgroup_sock_addr = caps.cgroup_sock_addr.is_available(),
            send_signal = caps.send_signal.is_available(),
            "kernel programs in place"
        );
        Ok(Enforcer {
            _ebpf: ebpf,
            caps,
            attachments,
            adopted,
            pin_dir: opts.pin_dir.clone(),
            cgroup_root,
            ring: Some(ring),
            counters,
            settings,
            watched,
            deny_exec,
            isolated,
            sessions,
            sensitive,
            deny_write,
            write_prefixes,
            write_suffixes,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// True when pinned links of an earlier run were re-adopted.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The ring buffer, once: the event reader owns it.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    pub fn counters(&self) -> Result<Counters, LoadError> {
        read_counters(&self.counters)
    }

    pub fn set_all_cgroups(&mut self, all: bool) -> Result<(), LoadError> {
        let mut cfg = self
            .settings
            .get(&0, 0)
            .map_err(|e| map_err("settings", &e))?;
        cfg.all_cgroups = u32::from(all);
        self.settings
            .set(0, cfg, 0)
            .map_err(|e| map_err("settings", &e))
    }

    /// Reports (and enforces in) this cgroup from now on.
    pub fn watch_cgroup(&mut self, cgroup_id: u64) -> Result<(), LoadError> {
        self.watched
            .insert(cgroup_id, 1u8, 0)
            .map_err(|e| map_err("watched_cgroups", &e))
    }

    pub fn is_watched(&self, cgroup_id: u64) -> bool {
        self.watched.get(&cgroup_id, 0).is_ok()
    }

    /// Kills `name` at exec in `cgroup_id` (0: every watched cgroup), for rule `rule_id`.
    pub fn deny_exec(&mut self, cgroup_id: u64, name: &str, rule_id: u32) -> Result<(), LoadError> {
        let key = abi::DenyKey::new(cgroup_id, name);
        let val = abi::DenyVal {
            rule_id,
            action: abi::DENY_KILL,
        };
        self.deny_exec
            .insert(key, val, 0)
            .map_err(|e| map_err("deny_exec", &e))
    }

    pub fn allow_exec(&mut self, cgroup_id: u64, name: &str) -> Result<(), LoadError> {
        let key = abi::DenyKey::new(cgroup_id, name);
        match self.deny_exec.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("deny_exec", &e)),
        }
    }

    /// Cuts every connect/sendmsg from the cgroup (the in-kernel half of `isolate`).
    pub fn isolate_cgroup(&mut self, cgroup_id: u64, rule_id: u32) -> Result<(), LoadError> {
        if !self.caps.cgroup_sock_addr.is_available() {
            return Err(LoadError::Map {
                map: "isolated_cgrps".into(),
                what: format!(
                    "network isolation unavailable: {}",
                    self.caps
                        .cgroup_sock_addr
                        .reason()
                        .unwrap_or("cgroup sock_addr refused")
                ),
            });
        }
        self.isolated
            .insert(cgroup_id, rule_id, 0)
            .map_err(|e| map_err("isolated_cgrps", &e))
    }

    pub fn release_cgroup(&mut self, cgroup_id: u64) -> Result<(), LoadError> {
        match self.isolated.remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("isolated_cgrps", &e)),
        }
    }

    /// Tags a process with a session; its children inherit the tag at fork, in kernel.
    pub fn tag_session(&mut self, pid: u32, tag: u64) -> Result<(), LoadError> {
        self.sessions
            .insert(pid, tag, 0)
            .map_err(|e| map_err("session_tags", &e))
    }

    /// Read-only opens below this path prefix are reported too.
    pub fn add_sensitive_prefix(&mut self, prefix: &str) -> Result<(), LoadError> {
        let (bits, data) = path_key(prefix)?;
        self.sensitive
            .insert(&LpmKey::new(bits, data), 1u32, 0)
            .map_err(|e| map_err("sensitive_paths", &e))
    }

    /// Installs the write-open prefilter: with [`WriteFilter::All`] every write-open of a
    /// watched cgroup is reported (the default after load); with [`WriteFilter::Paths`] only
    /// those of absolute paths with one of its prefixes or suffixes (plus relative, long and
    /// unreadable paths). Entries of an earlier run in the pinned maps are replaced.
    pub fn set_write_filter(&mut self, filter: &WriteFilter) -> Result<(), LoadError> {
        let mut cfg = self
            .settings
            .get(&0, 0)
            .map_err(|e| map_err("settings", &e))?;
        // off while the tries are rewritten, so no write-open is dropped meanwhile
        cfg.write_filter = 0;
        self.settings
            .set(0, cfg, 0)
            .map_err(|e| map_err("settings", &e))?;
        clear_trie(&mut self.write_prefixes, "write_prefixes")?;
        clear_trie(&mut self.write_suffixes, "write_suffixes")?;
        let WriteFilter::Paths { prefixes, suffixes } = filter else {
            return Ok(());
        };
        for p in prefixes {
            let (bits, data) = path_key(p)?;
            self.write_prefixes
                .insert(&LpmKey::new(bits, data), 1u32, 0)
                .map_err(|e| map_err("write_prefixes", &e))?;
        }
        for sfx in suffixes {
            let mut bytes = sfx.as_bytes().to_vec();
            bytes.reverse();
            let (bits, data) = bytes_key(sfx, &bytes)?;
            self.write_suffixes
                .insert(&LpmKey::new(bits, data), 1u32, 0)
                .map_err(|e| map_err("write_suffixes", &e))?;
        }
        cfg.write_filter = 1;
        self.settings
            .set(0, cfg, 0)
            .map_err(|e| map_err("settings", &e))
    }

    /// Write-opens below this prefix are refused (LSM `file_open`; only where LSM loads).
    pub fn deny_write_prefix(&mut self, prefix: &str, rule_id: u32) -> Result<(), LoadError> {
        if !self.caps.bpf_lsm.is_available() {
            return Err(LoadError::Map {
                map: "deny_write".into(),
                what: format!(
                    "file-write deny needs BPF LSM, unavailable here: {}",
                    self.caps.bpf_lsm.reason().unwrap_or("refused")
                ),
            });
        }
        let (bits, data) = path_key(prefix)?;
        self.deny_write
            .insert(&LpmKey::new(bits, data), rule_id, 0)
            .map_err(|e| map_err("deny_write", &e))
    }
}

fn clear_trie(
    trie: &mut LpmTrie<MapData, abi::PathKeyData, u32>,
    name: &str,
) -> Result<(), LoadError> {
    let keys: Vec<LpmKey<abi::PathKeyData>> = trie
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| map_err(name, &e))?;
    for k in keys {
        trie.remove(&k).map_err(|e| map_err(name, &e))?;
    }
    Ok(())
}

fn path_key(prefix: &str) -> Result<(u32, abi::PathKeyData), LoadError> {
    bytes_key(prefix, prefix.as_bytes())
}

fn bytes_key(shown: &str, bytes: &[u8]) -> Result<(u32, abi::PathKeyData), LoadError> {
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(LoadError::Map {
            map: "path prefix".into(),
            what: format!("prefix {shown:?} must be 1 to 63 bytes long"),
        });
    }
    let mut data = [0u8; 64];
    for (d, s) in data.iter_mut().zip(bytes) {
        *d = *s;
    }
    let bits = u32::try_from(bytes.len() * 8).unwrap_or(u32::MAX);
    Ok((bits, data))
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| LoadError::Map {
        map: name.into(),
        what: "missing from the object".into(),
    })
}

fn map_err(name: &str, e: &dyn std::error::Error) -> LoadError {
    LoadError::Map {
        map: name.into(),
        what: error_text(e),
    }
}

fn attach(
    ebpf: &mut Ebpf,
    prog: &Prog,
    btf: &Btf,
    cgroup_root: &Path,
) -> Result<FdLink, LoadError> {
    let perr = |what: String| LoadError::Program {
        program: prog.name.into(),
        what,
    };
    let p = ebpf
        .program_mut(prog.name)
        .ok_or_else(|| perr("missing from the object".into()))?;
    match prog.kind {
        Kind::TpBtf(tp) => {
            let p: &mut BtfTracePoint = p.try_into().map_err(|e| perr(error_text(&e)))?;
            p.load(tp, btf)
                .map_err(|e| perr(format!("load: {}", error_text(&e))))?;
            let id = p
                .attach()
                .map_err(|e| perr(format!("attach: {}", error_text(&e))))?;
            let link = p.take_link(id).map_err(|e| perr(error_text(&e)))?;
            Ok(FdLink::from(link))
        }
        Kind::RawTp(tp) => {
            let p: &mut RawTracePoint = p.try_into().map_err(|e| perr(error_text(&e)))?;
            p.load()
                .map_err(|e| perr(format!("load: {}", error_text(&e))))?;
            let id = p
                .attach(tp)
                .map_err(|e| perr(format!("attach: {}", error_text(&e))))?;
            let link = p.take_link(id).map_err(|e| perr(error_text(&e)))?;
            Ok(FdLink::from(link))
        }
        Kind::SockAddr(_) => {
            let p: &mut CgroupSockAddr = p.try_into().map_err(|e| perr(error_text(&e)))?;
            p.load()
                .map_err(|e| perr(format!("load: {}", error_text(&e))))?;
            let dir = std::fs::File::open(cgroup_root)
                .map_err(|e| perr(format!("open {}: {e}", cgroup_root.display())))?;
            let id = p
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| perr(format!("attach: {}", error_text(&e))))?;
            let link = p.take_link(id).map_err(|e| perr(error_text(&e)))?;
            FdLink::try_from(link).map_err(|e| perr(format!("not a bpf link: {}", error_text(&e))))
        }
        Kind::Lsm(hook) => {
            let p: &mut Lsm = p.try_into().map_err(|e| perr(error_text(&e)))?;
            p.load(hook, btf)
                .map_err(|e| perr(format!("load: {}", error_text(&e))))?;
            let id = p
                .attach()
                .map_err(|e| perr(format!("attach: {}", error_text(&e))))?;
            let link = p.take_link(id).map_err(|e| perr(error_text(&e)))?;
            Ok(FdLink::from(link))
        }
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Counters, LoadError> {
    let mut c = Counters::default();
    let get = |idx: u32| -> Result<Vec<u64>, LoadError> {
        let v = map.get(&idx, 0).map_err(|e| map_err("counters", &e))?;
        Ok(v.iter().copied().collect())
    };
    let emitted = get(abi::C_EMITTED)?;
    let lost = get(abi::C_LOST)?;
    let filtered = get(abi::C_FILTERED)?;
    c.emitted = emitted.iter().sum();
    c.lost = lost.iter().sum();
    c.filtered = filtered.iter().sum();
    c.exec_killed = get(abi::C_EXEC_KILLED)?.iter().sum();
    c.net_denied = get(abi::C_NET_DENIED)?.iter().sum();
    c.pending_full = get(abi::C_PENDING_FULL)?.iter().sum();
    c.per_cpu = emitted
        .iter()
        .zip(&lost)
        .zip(&filtered)
        .map(|((e, l), f)| [*e, *l, *f])
        .collect();
    Ok(c)
}

/// What is pinned, read without loading anything (for `tether node status`).
#[derive(Debug, Clone, Serialize)]
pub struct PinnedState {
    pub pin_dir: PathBuf,
    pub links: Vec<String>,
    pub counters: Option<Counters>,
    pub isolated_cgroups: Vec<u64>,
    pub deny_exec: Vec<(u64, String, u32)>,
    pub watched_cgroups: usize,
}

/// Reads the pins under `pin_dir`; `None` when nothing is pinned.
pub fn pinned_state(pin_dir: &Path) -> Result<Option<PinnedState>, LoadError> {
    let links_dir = pin_dir.join("links");
    if !links_dir.exists() {
        return Ok(None);
    }
    let mut links: Vec<String> = std::fs::read_dir(&links_dir)
        .map_err(|e| LoadError::Io {
            path: links_dir.clone(),
            what: e.to_string(),
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    links.sort();
    let maps = pin_dir.join("maps");
    let open = |name: &str| MapData::from_pin(maps.join(name)).map(aya::maps::Map::from_map_data);
    let counters = match open("counters") {
        Ok(Ok(m)) => PerCpuArray::try_from(m)
            .ok()
            .and_then(|a| read_counters(&a).ok()),
        _ => None,
    };
    let isolated_cgroups = match open("isolated_cgrps") {
        Ok(Ok(m)) => BpfHashMap::<MapData, u64, u32>::try_from(m)
            .map(|h| h.keys().filter_map(Result::ok).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let deny_exec = match open("deny_exec") {
        Ok(Ok(m)) => BpfHashMap::<MapData, abi::DenyKey, abi::DenyVal>::try_from(m)
            .map(|h| {
                h.iter()
                    .filter_map(Result::ok)
                    .map(|(k, v)| {
                        (
                            k.cgroup_id,
                            String::from_utf8_lossy(abi::cstr(&k.comm)).into_owned(),
                            v.rule_id,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let watched_cgroups = match open("watched_cgroups") {
        Ok(Ok(m)) => BpfHashMap::<MapData, u64, u8>::try_from(m)
            .map(|h| h.keys().count())
            .unwrap_or(0),
        _ => 0,
    };
    Ok(Some(PinnedState {
        pin_dir: pin_dir.into(),
        links,
        counters,
        isolated_cgroups,
        deny_exec,
        watched_cgroups,
    }))
}

/// Removes every pinned link, map and marker under `pin_dir`: programs detach as their
/// last reference goes. Returns the paths removed.
pub fn unload(pin_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let d = pin_dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            std::fs::remove_file(&p).map_err(|err| LoadError::Io {
                path: p.clone(),
                what: err.to_string(),
            })?;
            removed.push(p);
        }
        std::fs::remove_dir(&d).map_err(|err| LoadError::Io {
            path: d.clone(),
            what: err.to_string(),
        })?;
    }
    if pin_dir.exists() {
        std::fs::remove_dir(pin_dir).map_err(|err| LoadError::Io {
            path: pin_dir.into(),
            what: err.to_string(),
        })?;
    }
    Ok(removed)
}

/// Whether the ring buffer file descriptor is readable within `timeout_ms`.
pub fn wait_readable(fd: &impl AsRawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    rc > 0
}
