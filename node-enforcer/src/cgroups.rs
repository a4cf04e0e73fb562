//! cgroup id -> cgroup path -> container -> pod.
//!
//! The cgroup id the kernel reports is the inode number of the cgroup's directory under
//! the cgroup2 mount. Paths of Kubernetes containers name the pod uid and the container id:
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`
//! (systemd driver; `crio-<id>.scope` and `docker-<id>.scope` too) or
//! `kubepods/burstable/pod<uid>/<id>` (cgroupfs driver).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a cgroup path says about its container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRef {
    /// The full container id (64 hex characters for containerd, CRI-O and Docker).
    pub container_id: String,
    /// The pod uid, dashes restored.
    pub pod_uid: String,
    /// `containerd`, `crio`, `docker`, or empty for the cgroupfs layout.
    pub runtime: String,
}

impl ContainerRef {
    /// Falco's `container.id`: the first 12 characters.
    pub fn short_id(&self) -> &str {
        self.container_id.get(..12).unwrap_or(&self.container_id)
    }
}

/// One resolved cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The path below the cgroup2 mount, starting with `/`.
    pub path: String,
    /// `None` for host cgroups.
    pub container: Option<ContainerRef>,
}

/// The inode number of a path (the cgroup id of a cgroup2 directory).
pub fn inode_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Parses a cgroup path. `None` for anything that is not a Kubernetes container.
pub fn parse_kubepods(path: &str) -> Option<ContainerRef> {
    if !path.contains("kubepods") {
        return None;
    }
    let mut pod_uid = None;
    let mut container = None;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(rest) = comp.strip_suffix(".slice") {
            // kubepods-burstable-pod<uid_with_underscores>.slice
            if let Some(i) = rest.rfind("-pod") {
                let uid = rest.get(i + 4..).unwrap_or("");
                if !uid.is_empty() {
                    pod_uid = Some(uid.replace('_', "-"));
                }
            }
        } else if let Some(rest) = comp.strip_suffix(".scope") {
            for (prefix, runtime) in [
                ("cri-containerd-", "containerd"),
                ("crio-", "crio"),
                ("docker-", "docker"),
            ] {
                if let Some(id) = rest.strip_prefix(prefix) {
                    if is_container_id(id) {
                        container = Some((id.to_string(), runtime.to_string()));
                    }
                }
            }
        } else if let Some(uid) = comp.strip_prefix("pod") {
            // cgroupfs: kubepods/burstable/pod<uid>/<id>
            if uid.len() >= 32 {
                pod_uid = Some(uid.to_string());
            }
        } else if is_container_id(comp) {
            container = Some((comp.to_string(), String::new()));
        }
    }
    let (container_id, runtime) = container?;
    Some(ContainerRef {
        container_id,
        pod_uid: pod_uid.unwrap_or_default(),
        runtime,
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves cgroup ids by walking the cgroup2 tree, with a cache and a bounded rescan rate.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, CgroupInfo>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl CgroupResolver {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let mut r = Self {
            root: root.into(),
            by_id: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(50),
        };
        r.rescan();
        r
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every cgroup id whose path is a Kubernetes container or pod (`kubepods*`).
    pub fn kubepods_ids(&self) -> Vec<u64> {
        self.by_id
            .iter()
            .filter(|(_, i)| i.path.split('/').any(|c| c.starts_with("kubepods")))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Walks the tree again; the result replaces the cache.
    pub fn rescan(&mut self) {
        let mut map = HashMap::new();
        if let Some(id) = inode_of(&self.root) {
            map.insert(
                id,
                CgroupInfo {
                    path: "/".into(),
                    container: None,
                },
            );
        }
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.filter_map(Result::ok) {
                let Ok(ft) = e.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let child_rel = format!("{rel}/{name}");
                if let Ok(m) = e.metadata() {
                    map.insert(
                        m.ino(),
                        CgroupInfo {
                            container: parse_kubepods(&child_rel),
                            path: child_rel.clone(),
                        },
                    );
                }
                stack.push((e.path(), child_rel));
            }
        }
        self.by_id = map;
        self.last_scan = Some(Instant::now());
    }

    /// Drops `id` from the cache when its directory is gone (the cgroup was removed) and
    /// says whether it is gone; an id the cache does not know counts as gone.
    pub fn forget_if_gone(&mut self, id: u64) -> bool {
        let Some(info) = self.by_id.get(&id) else {
            return true;
        };
        let dir = self.root.join(info.path.trim_start_matches('/'));
        if inode_of(&dir) == Some(id) {
            return false;
        }
        self.by_id.remove(&id);
        true
    }

    /// The cgroup of `id`, rescanning on a miss unless a scan just ran.
    pub fn resolve(&mut self, id: u64) -> Option<&CgroupInfo> {
        if !self.by_id.contains_key(&id) {
            let stale = self
                .last_scan
                .is_none_or(|t| t.elapsed() >= self.min_rescan);
            if stale {
                self.rescan();
            }
        }
        self.by_id.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn systemd_driver_paths() {
        for (scope, runtime) in [
            ("cri-containerd", "containerd"),
            ("crio", "crio"),
            ("docker", "docker"),
        ] {
            let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_aaaa_bbbb_cccc_000000000001.slice/{scope}-{ID}.scope");
            let c = parse_kubepods(&p).unwrap();
            assert_eq!(c.container_id, ID);
            assert_eq!(c.short_id(), "0123456789ab");
            assert_eq!(c.pod_uid, "1b2c3d4e-aaaa-bbbb-cccc-000000000001");
            assert_eq!(c.runtime, runtime);
        }
        // guaranteed QoS pods sit directly under kubepods.slice
        let c = parse_kubepods(&format!("/kubepods.slice/kubepods-pod1b2c3d4e_aaaa_bbbb_cccc_000000000002.slice/cri-containerd-{ID}.scope")).unwrap();
        assert_eq!(c.pod_uid, "1b2c3d4e-aaaa-bbbb-cccc-000000000002");
    }

    #[test]
    fn cgroupfs_driver_paths() {
        let c = parse_kubepods(&format!(
            "/kubepods/besteffort/pod1b2c3d4e-aaaa-bbbb-cccc-000000000003/{ID}"
        ))
        .unwrap();
        assert_eq!(c.pod_uid, "1b2c3d4e-aaaa-bbbb-cccc-000000000003");
        assert_eq!(c.container_id, ID);
    }

    #[test]
    fn non_containers() {
        assert_eq!(parse_kubepods("/"), None);
        assert_eq!(parse_kubepods("/system.slice/ssh.service"), None);
        assert_eq!(
            parse_kubepods("/kubepods.slice/kubepods-burstable.slice"),
            None
        );
        assert_eq!(
            parse_kubepods("/kubepods.slice/kubepods-pod1_2.slice/crio-conmon-xyz.scope"),
            None
        );
        assert_eq!(
            parse_kubepods("/kubepods.slice/kubepods-podx.slice/cri-containerd-nothex.scope"),
            None
        );
    }

    #[test]
    fn removed_cgroups_are_forgotten() {
        let root = tempfile::tempdir().unwrap();
        let rel = format!("kubepods.slice/kubepods-pod1_2.slice/cri-containerd-{ID}.scope");
        let dir = root.path().join(&rel);
        std::fs::create_dir_all(&dir).unwrap();
        let id = inode_of(&dir).unwrap();
        let mut r = CgroupResolver::new(root.path());
        assert!(r.resolve(id).and_then(|c| c.container.as_ref()).is_some());
        assert!(!r.forget_if_gone(id));
        std::fs::remove_dir(&dir).unwrap();
        assert!(r.forget_if_gone(id));
        assert!(r.forget_if_gone(id), "an unknown id counts as gone");
        assert!(!r.forget_if_gone(inode_of(root.path()).unwrap()));
    }
}
