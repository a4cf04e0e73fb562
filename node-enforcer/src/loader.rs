//! Loads the kernel programs, pins them under `/sys/fs/bpf/tether`, re-adopts pins left by a
//! previous run, and applies the kernel-side commands (deny exec, isolate a cgroup, tag a
//! session, watch a cgroup).
//!
//! Pin layout: `PIN_DIR/maps/<map>` (every map of `tether.bpf.c`), `PIN_DIR/links/<program>`
//! (one link per attached program). A link pinned in bpffs keeps its program attached while
//! no loader runs, so enforcement holds across a restart; `unload` removes the directory.
//! The pinned `build_info` map holds a hash of the object whose links are pinned: a restart
//! of the same build re-adopts those links untouched; another build attaches its own
//! programs first and then replaces the old pins. Pins of programs the current run does not
//! use (the other syscall capture mechanism, an older build's programs) are removed last.
//!
//! Syscalls are captured by one program per syscall of interest and direction on the
//! `syscalls/sys_enter_NAME` / `sys_exit_NAME` tracepoints; where one of those is missing
//! (or when [`SyscallHook::RawTp`] forces it), by the `raw_tp/sys_enter` / `sys_exit` pair,
//! which runs for every syscall.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, RawTracePoint, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use serde::Serialize;

use crate::abi;
use crate::prefilter::WriteFilter;
use crate::probe::{error_text, Capabilities, SyscallTracepoints};

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
    /// `tp_btf/sched_process_exec`, `raw_tp/sys_enter`, `cgroup/connect4`, `lsm/bprm_check_security`...
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
    /// How syscalls are captured.
    pub syscall_hook: SyscallHook,
    /// Fault injection for tests: attaching the program of this name fails as a kernel
    /// refusal would. Not a flag of `tether node`.
    #[doc(hidden)]
    pub refuse_attach: Option<String>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(PIN_DIR),
            all_cgroups: false,
            wakeup_bytes: 1 << 20,
            syscall_hook: SyscallHook::Auto,
            refuse_attach: None,
        }
    }
}

/// The syscall capture mechanism asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallHook {
    /// Per-syscall tracepoints where the kernel has every one needed, else the raw_tp pair.
    #[default]
    Auto,
    /// The `raw_tp/sys_enter` / `raw_tp/sys_exit` pair, whatever the kernel offers.
    RawTp,
}

/// The syscall capture mechanism in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallCapture {
    /// `tracepoints` (`syscalls/sys_enter_NAME`, `sys_exit_NAME`) or `raw_tp`
    /// (`raw_tp/sys_enter`, `raw_tp/sys_exit`).
    pub mechanism: String,
    /// Syscalls with their own tracepoint programs (tracepoints only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<String>,
    /// Syscalls this kernel does not implement, so not captured (tracepoints only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_implemented: Vec<String>,
    /// Why the raw_tp pair is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SyscallCapture {
    /// The mechanism a start with `hook` uses on a kernel offering `tps`.
    pub fn decide(hook: SyscallHook, tps: &SyscallTracepoints) -> SyscallCapture {
        let raw = |reason: String| SyscallCapture {
            mechanism: "raw_tp".into(),
            syscalls: Vec::new(),
            not_implemented: Vec::new(),
            reason: Some(reason),
        };
        if hook == SyscallHook::RawTp {
            return raw("forced (--syscall-hook raw-tp / TETHER_SYSCALL_HOOK=raw-tp)".into());
        }
        if let Some(why) = tps.capability().reason() {
            return raw(why.to_string());
        }
        SyscallCapture {
            mechanism: "tracepoints".into(),
            syscalls: tps.present.iter().map(|s| (*s).to_string()).collect(),
            not_implemented: tps
                .not_implemented
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            reason: None,
        }
    }

    /// The raw_tp pair, after a per-syscall tracepoint was found but could not be used.
    pub fn after_tracepoint_failure(hook: &str, error: &str) -> SyscallCapture {
        SyscallCapture {
            mechanism: "raw_tp".into(),
            syscalls: Vec::new(),
            not_implemented: Vec::new(),
            reason: Some(format!(
                "the kernel has the per-syscall tracepoints, but {hook} could not be used: {error}"
            )),
        }
    }

    /// One line for logs and `tether node status`.
    pub fn describe(&self) -> String {
        if self.mechanism == "tracepoints" {
            let mut s = format!(
                "per-syscall tracepoints (syscalls/sys_enter_*, sys_exit_* of {} syscalls; no program runs for other syscalls)",
                self.syscalls.len()
            );
            if !self.not_implemented.is_empty() {
                s.push_str(&format!(
                    "; syscalls this kernel does not provide: {}",
                    self.not_implemented.join(", ")
                ));
            }
            s
        } else {
            format!(
                "raw_tp/sys_enter + raw_tp/sys_exit (a program on every syscall): {}",
                self.reason.as_deref().unwrap_or("")
            )
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
    name: String,
    kind: Kind,
    /// LSM programs load only where the probe says so; the rest are required.
    needs: Need,
}

#[derive(Clone)]
enum Kind {
    TpBtf(&'static str),
    RawTp(&'static str),
    /// A `syscalls` tracepoint, e.g. `sys_enter_openat`.
    SysTp(String),
    SockAddr(&'static str),
    Lsm(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Always,
    SockAddr,
    Lsm,
}

/// The programs to attach: the lifecycle, network and LSM ones, and the syscall programs of
/// `capture`.
fn programs(capture: &SyscallCapture) -> Vec<Prog> {
    let p = |name: String, kind: Kind, needs: Need| Prog { name, kind, needs };
    // lifecycle: program tether_NAME on tp_btf/HOOK
    let lifecycle = [
        ("exec", "sched_process_exec"),
        ("fork", "sched_process_fork"),
        ("exit", "sched_process_exit"),
        ("cgroup_mkdir", "cgroup_mkdir"),
        ("cgroup_rmdir", "cgroup_rmdir"),
    ];
    let mut v: Vec<Prog> = lifecycle
        .into_iter()
        .map(|(n, tp)| p(format!("tether_{n}"), Kind::TpBtf(tp), Need::Always))
        .collect();
    if capture.mechanism == "tracepoints" {
        for sc in &capture.syscalls {
            for dir in ["enter", "exit"] {
                v.push(p(
                    format!("tether_{dir}_{sc}"),
                    Kind::SysTp(format!("sys_{dir}_{sc}")),
                    Need::Always,
                ));
            }
        }
    } else {
        for tp in ["sys_enter", "sys_exit"] {
            v.push(p(format!("tether_{tp}"), Kind::RawTp(tp), Need::Always));
        }
    }
    // isolation: program tether_HOOK on cgroup/HOOK
    for hook in ["connect4", "connect6", "sendmsg4", "sendmsg6"] {
        v.push(p(
            format!("tether_{hook}"),
            Kind::SockAddr(hook),
            Need::SockAddr,
        ));
    }
    v.push(p(
        "tether_lsm_exec".into(),
        Kind::Lsm("bprm_check_security"),
        Need::Lsm,
    ));
    v
}

impl Kind {
    fn hook(&self) -> String {
        match self {
            Kind::TpBtf(t) => format!("tp_btf/{t}"),
            Kind::RawTp(t) => format!("raw_tp/{t}"),
            Kind::SysTp(t) => format!("tracepoint/syscalls/{t}"),
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
    capture: SyscallCapture,
    adopted: bool,
    pin_dir: PathBuf,
    /// The first 8 bytes of the sensitive prefixes, mirrored in `settings`.
    heads: ReadHeads,
    cgroup_root: PathBuf,
    ring: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    settings: Array<MapData, abi::Config>,
    watched: BpfHashMap<MapData, u64, u8>,
    deny_exec: BpfHashMap<MapData, abi::DenyKey, abi::DenyVal>,
    isolated: BpfHashMap<MapData, u64, u32>,
    sessions: BpfHashMap<MapData, u32, u64>,
    sensitive: LpmTrie<MapData, abi::PathKeyData, u32>,
    write_prefixes: LpmTrie<MapData, abi::PathKeyData, u32>,
    write_suffixes: LpmTrie<MapData, abi::PathKeyData, u32>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("pin_dir", &self.pin_dir)
            .field("adopted", &self.adopted)
            .field("capture", &self.capture)
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
        let mut capture = SyscallCapture::decide(opts.syscall_hook, &SyscallTracepoints::probe());
        drop_incompatible_map_pins(&maps_dir)?;

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&maps_dir)
            // `pending_task` (task storage) is only used by the programs
            .allow_unsupported_maps()
            .load(TETHER_OBJ)
            .map_err(|e| LoadError::Object(error_text(&e)))?;
        let map_names: Vec<String> = ebpf.maps().map(|(n, _)| n.to_string()).collect();

        let mut build_info: Array<MapData, u64> = Array::try_from(take(&mut ebpf, "build_info")?)
            .map_err(|e| map_err("build_info", &e))?;
        let pinned_build = build_info.get(&0, 0).ok().filter(|b| *b != 0);
        let same_build = pinned_build == Some(build_id());
        let mut attachments = Vec::new();
        let mut adopted_any = false;
        let mut fresh_links: Vec<(PathBuf, FdLink)> = Vec::new();
        let mut progs = programs(&capture);
        let mut next = 0;
        while let Some(prog) = progs.get(next) {
            next += 1;
            if attachments
                .iter()
                .any(|a: &Attachment| a.program == prog.name)
            {
                // placed before a fallback restarted the list
                continue;
            }
            let hook = prog.kind.hook();
            let unavailable = match prog.needs {
                Need::Always => None,
                Need::SockAddr => caps.cgroup_sock_addr.reason(),
                Need::Lsm => caps.bpf_lsm.reason(),
            };
            let link_path = links_dir.join(&prog.name);
            if let Some(reason) = unavailable {
                // a pin from a kernel that allowed it cannot exist here; drop a stale one
                let _ = std::fs::remove_file(&link_path);
                attachments.push(Attachment {
                    program: prog.name.clone(),
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
                            program: prog.name.clone(),
                            hook,
                            state: "adopted".into(),
                            reason: None,
                        });
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(program = %prog.name, error = %error_text(&e), "pinned link unreadable; attaching anew");
                    }
                }
            }
            let attached = if opts.refuse_attach.as_deref() == Some(prog.name.as_str()) {
                Err(LoadError::Program {
                    program: prog.name.clone(),
                    what: format!("attach {hook}: refused (fault injected)"),
                })
            } else {
                attach(&mut ebpf, prog, &btf, &cgroup_root)
            };
            let link = match attached {
                Ok(link) => link,
                Err(e) if matches!(prog.kind, Kind::SysTp(_)) => {
                    // A tracepoint the probe found but the kernel would not take: the raw_tp
                    // pair captures the same syscalls. The tracepoint links made so far are
                    // dropped (detached) before they were ever pinned.
                    tracing::warn!(program = %prog.name, hook = %hook, error = %e, "syscall tracepoint refused; capturing syscalls with the raw_tp pair instead");
                    capture = SyscallCapture::after_tracepoint_failure(&hook, &e.to_string());
                    let dropped: Vec<PathBuf> = progs
                        .iter()
                        .filter(|p| matches!(p.kind, Kind::SysTp(_)))
                        .map(|p| links_dir.join(&p.name))
                        .collect();
                    fresh_links.retain(|(path, _)| !dropped.contains(path));
                    attachments.retain(|a| !dropped.contains(&links_dir.join(&a.program)));
                    progs = programs(&capture);
                    next = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            fresh_links.push((link_path, link));
            attachments.push(Attachment {
                program: prog.name.clone(),
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
        // Last, pins this run does not use: the other syscall mechanism's programs, an
        // older build's. Removing a link pin detaches its program once no loader holds it.
        remove_stale_pins(&links_dir, |name| progs.iter().any(|p| p.name == name))?;
        remove_stale_pins(&maps_dir, |name| map_names.iter().any(|m| m == name))?;
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
        let write_prefixes = LpmTrie::try_from(take(&mut ebpf, "write_prefixes")?)
            .map_err(|e| map_err("write_prefixes", &e))?;
        let write_suffixes = LpmTrie::try_from(take(&mut ebpf, "write_suffixes")?)
            .map_err(|e| map_err("write_suffixes", &e))?;

        // the sensitive prefixes of an earlier run are still in the pinned trie: their heads
        // go in at once, so no sensitive read is dropped before they are added again
        let pinned_prefixes: Vec<LpmKey<abi::PathKeyData>> = sensitive
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| map_err("sensitive_paths", &e))?;
        let mut heads = ReadHeads::default();
        for k in &pinned_prefixes {
            let len = usize::try_from(k.prefix_len() / 8).unwrap_or(usize::MAX);
            heads.add(k.data().get(..len).unwrap_or(&[]));
        }
        let mut cfg = abi::Config {
            all_cgroups: u32::from(opts.all_cgroups),
            self_tgid: std::process::id(),
            wakeup_bytes: opts.wakeup_bytes,
            write_filter: 0,
            ..abi::Config::default()
        };
        heads.store(&mut cfg);
        settings
            .set(0, cfg, 0)
            .map_err(|e| map_err("settings", &e))?;

        let adopted = adopted_any;
        tracing::info!(
            pin_dir = %opts.pin_dir.display(),
            adopted,
            syscalls = %capture.describe(),
            bpf_lsm = caps.bpf_lsm.is_available(),
            cgroup_sock_addr = caps.cgroup_sock_addr.is_available(),
            send_signal = caps.send_signal.is_available(),
            "kernel programs in place"
        );
        Ok(Enforcer {
            _ebpf: ebpf,
            caps,
            attachments,
            capture,
            adopted,
            pin_dir: opts.pin_dir.clone(),
            heads,
            cgroup_root,
            ring: Some(ring),
            counters,
            settings,
            watched,
            deny_exec,
            isolated,
            sessions,
            sensitive,
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

    /// How syscalls are captured.
    pub fn syscall_capture(&self) -> &SyscallCapture {
        &self.capture
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
        // the head first: a read the trie would match is never rejected by its head
        if self.heads.add(prefix.as_bytes()) {
            let mut cfg = self
                .settings
                .get(&0, 0)
                .map_err(|e| map_err("settings", &e))?;
            self.heads.store(&mut cfg);
            self.settings
                .set(0, cfg, 0)
                .map_err(|e| map_err("settings", &e))?;
        }
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
}

/// The first 8 bytes of every sensitive prefix, for the kernel's cheap rejection of
/// read-only opens (`settings.read_head`). A prefix shorter than 8 bytes, or more than
/// [`abi::READ_HEADS`] distinct heads, turn the check off: every read-only open is then
/// looked up in the trie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ReadHeads {
    heads: Vec<u64>,
    off: bool,
}

impl ReadHeads {
    /// Adds the head of `prefix`; true when the kernel copy must change.
    fn add(&mut self, prefix: &[u8]) -> bool {
        if self.off {
            return false;
        }
        let Some(head) = prefix.first_chunk::<8>() else {
            self.off = true;
            return true;
        };
        let head = u64::from_ne_bytes(*head);
        if self.heads.contains(&head) {
            return false;
        }
        if self.heads.len() == abi::READ_HEADS {
            self.off = true;
        } else {
            self.heads.push(head);
        }
        true
    }

    fn store(&self, cfg: &mut abi::Config) {
        cfg.read_head = [0; abi::READ_HEADS];
        if self.off {
            cfg.read_heads = abi::READ_HEADS_OFF;
            return;
        }
        for (slot, h) in cfg.read_head.iter_mut().zip(&self.heads) {
            *slot = *h;
        }
        cfg.read_heads = u32::try_from(self.heads.len()).unwrap_or(abi::READ_HEADS_OFF);
    }
}

/// Key and value sizes of the pinned maps as this build lays them out (`bpf/tether.bpf.c`).
fn map_layouts() -> [(&'static str, usize, usize); 11] {
    use std::mem::size_of;
    let path_key = 4 + size_of::<abi::PathKeyData>();
    [
        ("settings", 4, size_of::<abi::Config>()),
        ("counters", 4, 8),
        ("build_info", 4, 8),
        ("watched_cgroups", 8, 1),
        (
            "deny_exec",
            size_of::<abi::DenyKey>(),
            size_of::<abi::DenyVal>(),
        ),
        ("isolated_cgrps", 8, 4),
        ("session_tags", 4, 8),
        ("sensitive_paths", path_key, 4),
        ("write_prefixes", path_key, 4),
        ("write_suffixes", path_key, 4),
        ("pending_task", 4, size_of::<u32>() * 2 + 8 * 6),
    ]
}

/// A map pinned by another build with a different key or value size would be reused by name
/// and make the programs fail to load: such a pin is removed (the running programs keep their
/// map until their links are replaced) and the map is created anew, empty.
fn drop_incompatible_map_pins(maps_dir: &Path) -> Result<(), LoadError> {
    for (name, key, value) in map_layouts() {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path).and_then(|m| m.info());
        let (k, v) = match &info {
            Ok(i) => (i.key_size() as usize, i.value_size() as usize),
            Err(e) => {
                tracing::warn!(map = name, error = %error_text(e), "pinned map unreadable; recreating it");
                (0, 0)
            }
        };
        if (k, v) == (key, value) {
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| LoadError::Io {
            path: path.clone(),
            what: e.to_string(),
        })?;
        tracing::warn!(
            map = name,
            pinned = %format!("{k}/{v}"),
            needed = %format!("{key}/{value}"),
            "pinned map of another build has other key/value sizes: recreated empty (its entries are dropped)"
        );
    }
    Ok(())
}

/// Removes the files of `dir` that `keep` does not name.
fn remove_stale_pins(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Io {
        path: dir.into(),
        what: e.to_string(),
    })?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if keep(&name) {
            continue;
        }
        let path = e.path();
        std::fs::remove_file(&path).map_err(|err| LoadError::Io {
            path: path.clone(),
            what: err.to_string(),
        })?;
        tracing::info!(path = %path.display(), "removed a pin this build does not use");
    }
    Ok(())
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
        program: prog.name.clone(),
        what,
    };
    let p = ebpf
        .program_mut(&prog.name)
        .ok_or_else(|| perr("missing from the object".into()))?;
    match &prog.kind {
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
        Kind::SysTp(tp) => {
            let p: &mut TracePoint = p.try_into().map_err(|e| perr(error_text(&e)))?;
            p.load()
                .map_err(|e| perr(format!("load: {}", error_text(&e))))?;
            let id = p
                .attach("syscalls", tp)
                .map_err(|e| perr(format!("attach syscalls/{tp}: {}", error_text(&e))))?;
            let link = p.take_link(id).map_err(|e| perr(error_text(&e)))?;
            FdLink::try_from(link).map_err(|e| perr(format!("not a bpf link: {}", error_text(&e))))
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
    /// The syscall programs pinned: `tracepoints (N syscalls)` or `raw_tp`; `None` when
    /// neither is.
    pub syscall_capture: Option<String>,
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
    let per_syscall = links
        .iter()
        .filter(|l| l.starts_with("tether_enter_"))
        .count();
    let syscall_capture = if per_syscall > 0 {
        Some(format!("tracepoints ({per_syscall} syscalls)"))
    } else if links.iter().any(|l| l == "tether_sys_enter") {
        Some("raw_tp".to_string())
    } else {
        None
    };
    Ok(Some(PinnedState {
        syscall_capture,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s.as_bytes()[..8]);
        u64::from_ne_bytes(b)
    }

    #[test]
    fn read_heads_hold_the_first_8_bytes_once() {
        let mut h = ReadHeads::default();
        assert!(h.add(b"/etc/shadow"));
        assert!(h.add(b"/etc/sudoers"));
        // same first 8 bytes as /etc/shadow: nothing changes
        assert!(!h.add(b"/etc/shadow-"));
        let mut cfg = abi::Config::default();
        h.store(&mut cfg);
        assert_eq!(cfg.read_heads, 2);
        assert_eq!(cfg.read_head[0], head("/etc/shadow"));
        assert_eq!(cfg.read_head[1], head("/etc/sudoers"));
        assert_eq!(cfg.read_head[2], 0);
    }

    #[test]
    fn default_sensitive_prefixes_fit() {
        let mut h = ReadHeads::default();
        for p in crate::node::SENSITIVE_PREFIXES {
            h.add(p.as_bytes());
        }
        let mut cfg = abi::Config::default();
        h.store(&mut cfg);
        assert_ne!(cfg.read_heads, abi::READ_HEADS_OFF);
        assert!(cfg.read_heads as usize <= abi::READ_HEADS);
        assert_eq!(cfg.read_head[0], head("/etc/shadow"));
    }

    #[test]
    fn short_prefix_or_too_many_heads_turn_the_check_off() {
        let mut h = ReadHeads::default();
        assert!(h.add(b"/etc/shadow"));
        assert!(h.add(b"/etc/"));
        assert!(!h.add(b"/root/.ssh/"));
        let mut cfg = abi::Config::default();
        h.store(&mut cfg);
        assert_eq!(cfg.read_heads, abi::READ_HEADS_OFF);

        let mut h = ReadHeads::default();
        for i in 0..abi::READ_HEADS {
            assert!(h.add(format!("/dir{i:04}/x").as_bytes()));
        }
        h.store(&mut cfg);
        assert_eq!(cfg.read_heads as usize, abi::READ_HEADS);
        assert!(h.add(b"/one/more/prefix"));
        h.store(&mut cfg);
        assert_eq!(cfg.read_heads, abi::READ_HEADS_OFF);
    }

    #[test]
    fn capture_decision() {
        let all = SyscallTracepoints {
            present: crate::probe::SYSCALLS
                .iter()
                .copied()
                .filter(|s| !s.ends_with("init_module"))
                .collect(),
            not_implemented: vec!["init_module", "finit_module"],
            missing: Vec::new(),
            error: None,
        };
        let c = SyscallCapture::decide(SyscallHook::Auto, &all);
        assert_eq!(c.mechanism, "tracepoints");
        assert_eq!(c.syscalls.len(), crate::probe::SYSCALLS.len() - 2);
        let progs = programs(&c);
        assert!(progs.iter().any(|p| p.name == "tether_enter_openat"));
        assert!(progs.iter().any(|p| p.name == "tether_exit_openat"));
        assert!(!progs.iter().any(|p| p.name == "tether_enter_init_module"));
        assert!(!progs.iter().any(|p| p.name == "tether_sys_enter"));

        let forced = SyscallCapture::decide(SyscallHook::RawTp, &all);
        assert_eq!(forced.mechanism, "raw_tp");
        let progs = programs(&forced);
        assert!(progs.iter().any(|p| p.name == "tether_sys_enter"));
        assert!(!progs.iter().any(|p| p.name.starts_with("tether_enter_")));

        let mut one_missing = all.clone();
        one_missing.present.retain(|s| *s != "openat2");
        one_missing.missing.push("openat2");
        let c = SyscallCapture::decide(SyscallHook::Auto, &one_missing);
        assert_eq!(c.mechanism, "raw_tp");
        assert!(
            c.reason.as_deref().unwrap_or("").contains("openat2"),
            "{c:?}"
        );
    }
}
