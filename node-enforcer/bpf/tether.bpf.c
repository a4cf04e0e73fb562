/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Tether node enforcer: process lifecycle, syscalls of interest and kernel-side
 * enforcement. Entry points are thin: each hook calls one function and returns its verdict.
 * Every event goes through one ring buffer with no-wakeup submission; the consumer is woken
 * only when `wakeup_bytes` are waiting and otherwise polls.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tether.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EPERM 1
#define SIGKILL 9
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_RAW 3
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define S_ISUID 04000
#define S_ISGID 02000

/* x86_64 syscall numbers of interest */
#define NR_open 2
#define NR_dup2 33
#define NR_socket 41
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_bind 49
#define NR_listen 50
#define NR_link 86
#define NR_symlink 88
#define NR_chmod 90
#define NR_fchmod 91
#define NR_ptrace 101
#define NR_mount 165
#define NR_init_module 175
#define NR_openat 257
#define NR_linkat 265
#define NR_symlinkat 266
#define NR_fchmodat 268
#define NR_unshare 272
#define NR_accept4 288
#define NR_dup3 292
#define NR_setns 308
#define NR_finit_module 313
#define NR_memfd_create 319
#define NR_bpf 321
#define NR_execveat 322
#define NR_openat2 437
#define NR_fchmodat2 452

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TETHER_C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tether_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

/* hash of the object whose links are pinned: a restart of the same build re-adopts them */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} build_info SEC(".maps");

/* cgroup id -> 1: cgroups whose syscalls are reported and enforced */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} watched_cgroups SEC(".maps");

/* (cgroup id or 0, comm) -> rule: binaries killed at exec */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tether_deny_key);
	__type(value, struct tether_deny_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny_exec SEC(".maps");

/* cgroup id -> rule: isolated cgroups, every connect/sendmsg refused */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} isolated_cgrps SEC(".maps");

/* path prefixes whose read-only opens are reported too (sensitive files) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sensitive_paths SEC(".maps");

/* the write-open prefilter, compiled from the rules: absolute paths with one of these
 * prefixes (write_prefixes) or suffixes (write_suffixes, keyed by the reversed path) are
 * reported; the others are counted as filtered */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} write_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} write_suffixes SEC(".maps");

/* tgid -> session tag; children inherit it at fork */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} session_tags SEC(".maps");

struct pending {
	__u32 nr;            /* 0: nothing pending (read(2), never of interest, is 0) */
	__u32 _pad;
	__u64 args[6];
};

/* per thread: the arguments of a kept call between its entry and its exit. Task storage
 * instead of a hash keyed by pid_tgid: a thread that never had a call kept costs one NULL
 * check at exit, the slot is reused without an update, and it is freed with the task */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pending_task SEC(".maps");

/* a path key placed so that its path is 8-byte aligned with 8 bytes before it (lead and the
 * prefix length): 8-byte words can be read at offsets down to -8 from the path */
struct scratch {
	__u32 lead;
	struct tether_path_key k;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_key SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/* the settings, looked up once per program run and passed down */
static __always_inline struct tether_config *cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings, &zero);
}

static __always_inline int is_watched(struct tether_config *c, __u64 cg)
{
	if (c->all_cgroups)
		return 1;
	return bpf_map_lookup_elem(&watched_cgroups, &cg) != NULL;
}

/* is_watched for the current task, reading its cgroup id only when it matters */
static __always_inline int current_watched(struct tether_config *c)
{
	if (c->all_cgroups)
		return 1;
	__u64 cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&watched_cgroups, &cg) != NULL;
}

static __always_inline __u64 wakeup_flag(struct tether_config *c)
{
	__u64 limit = c ? c->wakeup_bytes : 0;
	if (limit == 0 || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= limit)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The task pointers below are BTF pointers (tp_btf arguments, bpf_get_current_task_btf):
 * fields are plain loads the verifier guards, not one bpf_probe_read_kernel call each. */
static __always_inline __u32 tty_nr(struct task_struct *t)
{
	struct tty_struct *tty = t->signal->tty;
	if (!tty)
		return 0;
	struct tty_driver *drv = tty->driver;
	__u32 major = drv->major;
	__u32 minor = drv->minor_start + tty->index;
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

static __always_inline __u64 session_of(__u32 tgid)
{
	__u64 *tag = bpf_map_lookup_elem(&session_tags, &tgid);
	return tag ? *tag : 0;
}

/* `t` is the current task in every caller (exec, fork's parent, exit, syscalls) */
static __always_inline void fill_hdr(struct tether_hdr *h, __u32 kind, struct task_struct *t,
				     __u64 cg, __u64 session)
{
	h->kind = kind;
	h->flags = 0;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = cg;
	h->session = session;
	h->pid = t->tgid;
	h->tid = t->pid;
	h->ppid = t->real_parent->tgid;
	const struct cred *cr = t->cred;
	h->uid = cr->uid.val;
	h->gid = cr->gid.val;
	if (bpf_core_field_exists(t->loginuid))
		h->loginuid = t->loginuid.val;
	else
		h->loginuid = (__u32)-1;
	h->tty = tty_nr(t);
	h->_pad0 = 0;
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* ---- process lifecycle ---------------------------------------------------------------- */

static __always_inline int on_exec(struct task_struct *p, struct linux_binprm *bprm)
{
	struct tether_config *c = cfg();
	if (!c)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 tgid = p->tgid;
	__u32 flags = 0;
	__u32 rule = 0;

	if (is_watched(c, cg)) {
		flags |= TETHER_F_WATCHED;
		/* enforcement first: it must hold even when the ring buffer is full */
		struct tether_deny_key key = { .cgroup_id = cg };
		bpf_get_current_comm(&key.comm, sizeof(key.comm));
		struct tether_deny_val *d = bpf_map_lookup_elem(&deny_exec, &key);
		if (!d) {
			key.cgroup_id = 0;
			d = bpf_map_lookup_elem(&deny_exec, &key);
		}
		if (d && (d->action & TETHER_DENY_KILL) && c->self_tgid != tgid) {
			rule = d->rule_id;
			if (bpf_send_signal(SIGKILL) == 0) {
				flags |= TETHER_F_KILLED;
				count(TETHER_C_EXEC_KILLED);
			} else {
				flags |= TETHER_F_KILL_FAILED;
			}
		}
	}

	struct tether_exec *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_EXEC, p, cg, session_of(tgid));
	e->hdr.flags = flags;
	e->deny_rule = rule;
	e->_pad0 = 0;
	e->start_boot_ns = p->start_boottime;
	const char *fname = bprm->filename;
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), fname);
	e->filename_len = n > 0 ? n - 1 : 0;

	struct mm_struct *mm = p->mm;
	unsigned long start = mm->arg_start;
	unsigned long end = mm->arg_end;
	unsigned long len = end > start ? end - start : 0;
	if (len > TETHER_ARGS_LEN - 1) {
		len = TETHER_ARGS_LEN - 1;
		e->hdr.flags |= TETHER_F_ARGS_TRUNC;
	}
	len &= (TETHER_ARGS_LEN - 1);
	if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	else
		e->args_len = 0;
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag(c));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tether_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 child_tgid = child->tgid;
	if (child_tgid != child->pid)
		return 0; /* a new thread, not a new process */
	__u32 ptgid = parent->tgid;
	/* one lookup: the parent's tag is both inherited and reported */
	__u64 *tag = bpf_map_lookup_elem(&session_tags, &ptgid);
	__u64 session = 0;
	if (tag) {
		session = *tag;
		bpf_map_update_elem(&session_tags, &child_tgid, &session, BPF_ANY);
	}
	struct tether_fork *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_FORK, parent, bpf_get_current_cgroup_id(), session);
	e->child_pid = child_tgid;
	e->_pad0 = 0;
	e->start_boot_ns = child->start_boottime;
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag(cfg()));
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tether_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

static __always_inline int on_exit(struct task_struct *p)
{
	__u32 tgid = p->tgid;
	if (tgid != p->pid)
		return 0; /* a thread, the process lives on */
	/* delete only a tag that exists: a delete takes the bucket lock even for a miss */
	__u64 *tag = bpf_map_lookup_elem(&session_tags, &tgid);
	__u64 session = 0;
	if (tag) {
		session = *tag;
		bpf_map_delete_elem(&session_tags, &tgid);
	}
	struct tether_exit *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_EXIT, p, bpf_get_current_cgroup_id(), session);
	e->exit_code = p->exit_code;
	e->_pad0 = 0;
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag(cfg()));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tether_exit, struct task_struct *p)
{
	return on_exit(p);
}

/* New cgroup v2 directories below a watched one, or named kubepods*, are watched at once,
 * before the container's first process runs. */
static __always_inline int on_cgroup_mkdir(struct cgroup *cgrp)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0; /* not the v2 hierarchy */
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u64 parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	__u8 one = 1;
	if (bpf_map_lookup_elem(&watched_cgroups, &parent)) {
		bpf_map_update_elem(&watched_cgroups, &id, &one, BPF_ANY);
		return 0;
	}
	char name[9] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(cgrp, kn, name));
	if (name[0] == 'k' && name[1] == 'u' && name[2] == 'b' && name[3] == 'e' &&
	    name[4] == 'p' && name[5] == 'o' && name[6] == 'd' && name[7] == 's')
		bpf_map_update_elem(&watched_cgroups, &id, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(tether_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return on_cgroup_mkdir(cgrp);
}

/* A removed cgroup v2 directory leaves the per-cgroup maps: ids of dead cgroups would
 * otherwise fill watched_cgroups and isolated_cgrps on a node with pod churn. (deny_exec
 * entries of a cgroup are keyed with the binary's name too: user space removes those.) */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(tether_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	bpf_map_delete_elem(&watched_cgroups, &id);
	bpf_map_delete_elem(&isolated_cgrps, &id);
	return 0;
}

/* ---- syscalls of interest ------------------------------------------------------------- */
/*
 * Two ways in, one body. Normally one program per syscall of interest and direction
 * (`tracepoint/syscalls/sys_enter_openat`, `sys_exit_openat`, ...): other syscalls run no
 * program at all, the arguments come in the tracepoint record and the syscall number is a
 * constant each program is specialised for. Where a kernel lacks one of those tracepoints the
 * loader attaches the `raw_tp/sys_enter` / `raw_tp/sys_exit` pair instead, which runs for
 * every syscall and filters on the number first.
 */

static __always_inline int interesting(long nr)
{
	switch (nr) {
	case NR_open: case NR_openat: case NR_openat2:
	case NR_connect: case NR_accept: case NR_accept4: case NR_listen: case NR_bind:
	case NR_sendto: case NR_socket: case NR_ptrace: case NR_setns: case NR_unshare:
	case NR_mount: case NR_init_module: case NR_finit_module: case NR_bpf:
	case NR_chmod: case NR_fchmod: case NR_fchmodat: case NR_fchmodat2:
	case NR_memfd_create: case NR_execveat: case NR_symlink: case NR_symlinkat:
	case NR_link: case NR_linkat: case NR_dup2: case NR_dup3:
		return 1;
	}
	return 0;
}

static __always_inline int sensitive_path(const char *upath)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_key, &zero);
	if (!s)
		return 0;
	struct tether_path_key *k = &s->k;
	long n = bpf_probe_read_user_str(k->path, sizeof(k->path), upath);
	if (n <= 1)
		return 0;
	k->prefixlen = (n - 1) * 8;
	return bpf_map_lookup_elem(&sensitive_paths, k) != NULL;
}

/* 1 when a read-only open of this path is below a sensitive prefix. Most opens are not:
 * their first 8 bytes (one 8-byte read) match none of the prefixes' first 8 bytes, and
 * neither the path nor the trie is read. */
static __always_inline int read_wanted(struct tether_config *c, const char *upath)
{
	__u32 n = c->read_heads;
	if (n == 0)
		return 0;
	if (n <= TETHER_READ_HEADS) {
		__u64 head = 0;
		/* a short path at the end of a mapping can fail this read: then the trie decides */
		if (bpf_probe_read_user(&head, sizeof(head), upath) == 0) {
			int hit = 0;
			for (int i = 0; i < TETHER_READ_HEADS; i++) {
				if (i >= n)
					break;
				if (c->read_head[i] == head) {
					hit = 1;
					break;
				}
			}
			if (!hit)
				return 0;
		}
	}
	return sensitive_path(upath);
}

/* 1 when a write-open of this path must reach user space: the prefilter is off, or the path
 * is relative (resolved in user space), empty, unreadable, longer than a key or has a `../`,
 * or it has one of the rules' prefixes or suffixes */
static __always_inline int write_wanted(struct tether_config *c, const char *upath)
{
	if (!c->write_filter)
		return 1;
	__u32 zero = 0, one = 1;
	struct scratch *ks = bpf_map_lookup_elem(&scratch_key, &zero);
	struct scratch *rs = bpf_map_lookup_elem(&scratch_key, &one);
	if (!ks || !rs)
		return 1;
	struct tether_path_key *k = &ks->k;
	struct tether_path_key *r = &rs->k;
	long n = bpf_probe_read_user_str(k->path, sizeof(k->path), upath);
	if (n <= 1 || n >= (long)sizeof(k->path))
		return 1;
	if (k->path[0] != '/')
		return 1;
	long len = n - 1;
	k->prefixlen = len * 8;
	if (bpf_map_lookup_elem(&write_prefixes, k))
		return 1;
	/* the reversed path, 8 bytes at a time: word i of r is the byte-swapped word that ends
	 * 8*i bytes before the end of k; bytes read from before the path (the key's prefix
	 * length, `lead`) or after its end land past len in r, where the lookup does not look */
	char *base = (char *)ks; /* k->path is at base + 8 */
	for (int i = 0; i < (int)sizeof(r->path) / 8; i++) {
		if (i * 8 >= len)
			break;
		__u64 off = 8 + len - 8 * (i + 1); /* 1..62 */
		barrier_var(off);
		if (off > sizeof(*ks) - 8)
			break;
		__u64 w = *(__u64 *)(base + off);
		*(__u64 *)&r->path[i * 8] = __builtin_bswap64(w);
	}
	r->prefixlen = len * 8;
	if (bpf_map_lookup_elem(&write_suffixes, r))
		return 1;
	/* a `../` makes the written path differ from its prefix: report it. Most paths have no
	 * '.' in a word at all (a word test); the byte scan runs only when one has */
	int dot = 0;
	for (int i = 0; i < (int)sizeof(k->path) / 8; i++) {
		if (i * 8 >= len)
			break;
		__u64 v = *(__u64 *)&k->path[i * 8] ^ 0x2e2e2e2e2e2e2e2eULL;
		if ((v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL) {
			dot = 1;
			break;
		}
	}
	if (!dot)
		return 0;
	for (int i = 0; i < (int)sizeof(k->path) - 2; i++) {
		if (i + 2 >= len)
			break;
		if (k->path[i] == '.' && k->path[i + 1] == '.' && k->path[i + 2] == '/')
			return 1;
	}
	return 0;
}

#define OPEN_WRITE (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)

static __always_inline int open_wanted(struct tether_config *c, __u64 flags, const char *upath)
{
	if ((flags & OPEN_WRITE) && write_wanted(c, upath))
		return 1;
	return read_wanted(c, upath);
}

static __always_inline __u16 user_family(const void *uaddr)
{
	__u16 fam = 0;
	if (uaddr)
		bpf_probe_read_user(&fam, sizeof(fam), uaddr);
	return fam;
}

/* the in-kernel filter: 1 when the call should reach user space */
static __always_inline int keep_call(struct tether_config *c, long nr, __u64 *a)
{
	switch (nr) {
	case NR_open:
		return open_wanted(c, a[1], (const char *)a[0]);
	case NR_openat:
		return open_wanted(c, a[2], (const char *)a[1]);
	case NR_openat2: {
		__u64 flags = 0;
		bpf_probe_read_user(&flags, sizeof(flags), (void *)a[2]); /* open_how.flags */
		a[2] = flags; /* report the flags as openat does */
		return open_wanted(c, flags, (const char *)a[1]);
	}
	case NR_connect:
	case NR_bind: {
		__u16 fam = user_family((void *)a[1]);
		return fam == AF_INET || fam == AF_INET6;
	}
	case NR_sendto: {
		if (!a[4])
			return 0; /* connected socket: the connect was reported */
		__u16 fam = user_family((void *)a[4]);
		return fam == AF_INET || fam == AF_INET6;
	}
	case NR_socket:
		return a[0] == AF_PACKET || (a[1] & 0xf) == SOCK_RAW;
	case NR_ptrace:
		/* PTRACE_TRACEME, PEEK/POKE text/data/user, ATTACH, SEIZE */
		return a[0] == 0 || (a[0] >= 1 && a[0] <= 6) || a[0] == 16 || a[0] == 0x4206;
	case NR_chmod:
	case NR_fchmod:
		return (a[1] & (S_ISUID | S_ISGID)) != 0;
	case NR_fchmodat:
	case NR_fchmodat2:
		return (a[2] & (S_ISUID | S_ISGID)) != 0;
	case NR_dup2:
	case NR_dup3:
		return a[1] <= 2; /* redirection of stdin/stdout/stderr */
	}
	return 1;
}

/* Entry of a syscall of interest: filtered calls touch no map but `settings` (and
 * `watched_cgroups` without --all-cgroups); a kept call's arguments go to the thread's
 * `pending_task` slot. */
static __always_inline int sys_enter_common(struct tether_config *c, long nr, __u64 *a)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (c->self_tgid == (__u32)(id >> 32))
		return 0;
	if (!current_watched(c)) {
		count(TETHER_C_FILTERED);
		return 0;
	}
	if (!keep_call(c, nr, a)) {
		count(TETHER_C_FILTERED);
		return 0;
	}
	struct task_struct *t = bpf_get_current_task_btf();
	struct pending *p = bpf_task_storage_get(&pending_task, t, 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p) {
		count(TETHER_C_PENDING_FULL);
		return 0;
	}
	for (int i = 0; i < 6; i++)
		p->args[i] = a[i];
	p->nr = nr;
	return 0;
}

static __always_inline __u32 read_ustr(char *dst, const void *src)
{
	if (!src)
		return 0;
	long n = bpf_probe_read_user_str(dst, TETHER_PATH_LEN, src);
	return n > 0 ? n - 1 : 0;
}

static __always_inline __u32 read_uaddr(__u8 *dst, const void *src, __u64 len)
{
	if (!src)
		return 0;
	if (len > TETHER_ADDR_LEN)
		len = TETHER_ADDR_LEN;
	len &= 0x1f;
	if (len == 0 || bpf_probe_read_user(dst, len, src) != 0)
		return 0;
	return len;
}

/* Exit of a call kept at entry: the record, with the result and the strings and address the
 * call read or wrote. `p` is the thread's pending slot, its nr already checked. */
static __always_inline int emit_syscall(long nr, long ret, struct pending *p,
					struct task_struct *t)
{
	p->nr = 0;
	struct tether_syscall *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	__u32 tgid = t->tgid;
	fill_hdr(&e->hdr, TETHER_EV_SYSCALL, t, bpf_get_current_cgroup_id(), session_of(tgid));
	e->hdr.flags |= TETHER_F_WATCHED;
	e->res = ret;
	e->nr = nr;
	e->_pad0 = 0;
	e->path_len = 0;
	e->path2_len = 0;
	e->addr_len = 0;
	e->path[0] = 0;
	e->path2[0] = 0;
	for (int i = 0; i < 6; i++)
		e->args[i] = p->args[i];
	__u64 *a = e->args;
	switch (nr) {
	case NR_open: case NR_chmod: case NR_memfd_create:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		break;
	case NR_openat: case NR_openat2: case NR_fchmodat: case NR_fchmodat2: case NR_execveat:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		break;
	case NR_symlink: case NR_link: case NR_mount:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		e->path2_len = read_ustr(e->path2, (void *)a[1]);
		break;
	case NR_symlinkat:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		e->path2_len = read_ustr(e->path2, (void *)a[2]);
		break;
	case NR_linkat:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		e->path2_len = read_ustr(e->path2, (void *)a[3]);
		break;
	case NR_init_module:
		e->path_len = read_ustr(e->path, (void *)a[2]);
		break;
	case NR_finit_module:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		break;
	case NR_connect: case NR_bind:
		e->addr_len = read_uaddr(e->addr, (void *)a[1], a[2]);
		break;
	case NR_sendto:
		e->addr_len = read_uaddr(e->addr, (void *)a[4], a[5]);
		break;
	case NR_accept: case NR_accept4:
		if (ret >= 0 && a[1] && a[2]) {
			__u32 alen = 0;
			bpf_probe_read_user(&alen, sizeof(alen), (void *)a[2]);
			e->addr_len = read_uaddr(e->addr, (void *)a[1], alen);
		}
		break;
	}
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag(cfg()));
	return 0;
}

/* -- per-syscall tracepoints (the normal path) -- */

/* the records of `syscalls/sys_enter_*` and `sys_exit_*` (see their `format` in tracefs);
 * an enter program reads only the arguments its syscall has: the kernel refuses to attach
 * a program that reads past the record */
struct tp_sys_enter {
	__u64 _common;
	__s32 nr;
	__u32 _pad;
	__u64 args[6];
};

struct tp_sys_exit {
	__u64 _common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* the thread's pending slot, NULL at once (one load, no helper call) for a task that
 * never had any task storage */
static __always_inline struct pending *pending_of(struct task_struct *t)
{
	if (!t->bpf_storage)
		return NULL;
	return bpf_task_storage_get(&pending_task, t, 0, 0);
}

static __always_inline int tp_exit(long nr, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct pending *p = pending_of(t);
	if (!p || !p->nr)
		return 0;
	if (p->nr != nr) {
		p->nr = 0; /* left by a call whose exit was not seen */
		return 0;
	}
	return emit_syscall(nr, ret, p, t);
}

#define SYSCALL_TP(name, NR, NARGS)                                                  \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                  \
	int tether_enter_##name(struct tp_sys_enter *ctx)                            \
	{                                                                            \
		struct tether_config *c = cfg();                                     \
		if (!c)                                                              \
			return 0;                                                    \
		__u64 a[6] = {};                                                     \
		_Pragma("unroll") for (int i = 0; i < (NARGS); i++) a[i] = ctx->args[i]; \
		return sys_enter_common(c, NR, a);                                   \
	}                                                                            \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                   \
	int tether_exit_##name(struct tp_sys_exit *ctx)                              \
	{                                                                            \
		return tp_exit(NR, ctx->ret);                                        \
	}

/* keep in step with `interesting()` and SYSCALLS in src/loader.rs */
SYSCALL_TP(open, NR_open, 3)
SYSCALL_TP(openat, NR_openat, 4)
SYSCALL_TP(openat2, NR_openat2, 4)
SYSCALL_TP(connect, NR_connect, 3)
SYSCALL_TP(accept, NR_accept, 3)
SYSCALL_TP(accept4, NR_accept4, 4)
SYSCALL_TP(listen, NR_listen, 2)
SYSCALL_TP(bind, NR_bind, 3)
SYSCALL_TP(sendto, NR_sendto, 6)
SYSCALL_TP(socket, NR_socket, 3)
SYSCALL_TP(ptrace, NR_ptrace, 4)
SYSCALL_TP(setns, NR_setns, 2)
SYSCALL_TP(unshare, NR_unshare, 1)
SYSCALL_TP(mount, NR_mount, 5)
SYSCALL_TP(init_module, NR_init_module, 3)
SYSCALL_TP(finit_module, NR_finit_module, 3)
SYSCALL_TP(bpf, NR_bpf, 3)
SYSCALL_TP(chmod, NR_chmod, 2)
SYSCALL_TP(fchmod, NR_fchmod, 2)
SYSCALL_TP(fchmodat, NR_fchmodat, 3)
SYSCALL_TP(fchmodat2, NR_fchmodat2, 4)
SYSCALL_TP(memfd_create, NR_memfd_create, 2)
SYSCALL_TP(execveat, NR_execveat, 5)
SYSCALL_TP(symlink, NR_symlink, 2)
SYSCALL_TP(symlinkat, NR_symlinkat, 3)
SYSCALL_TP(link, NR_link, 2)
SYSCALL_TP(linkat, NR_linkat, 5)
SYSCALL_TP(dup2, NR_dup2, 2)
SYSCALL_TP(dup3, NR_dup3, 3)

/* -- the raw_tp pair (fallback) -- */

SEC("raw_tp/sys_enter")
int BPF_PROG(tether_sys_enter, struct pt_regs *regs, long id)
{
	if (!interesting(id))
		return 0;
	struct tether_config *c = cfg();
	if (!c)
		return 0;
	/* r10, r9, r8 and, 24 bytes on, dx, si, di lie in one 64-byte span of pt_regs: one read */
	__u64 span[8] = {};
	__u32 base = bpf_core_field_offset(struct pt_regs, r10);
	if (bpf_probe_read_kernel(span, sizeof(span), (void *)regs + base) != 0)
		return 0;
	__u32 o_r9 = (bpf_core_field_offset(struct pt_regs, r9) - base) / 8;
	__u32 o_r8 = (bpf_core_field_offset(struct pt_regs, r8) - base) / 8;
	__u32 o_dx = (bpf_core_field_offset(struct pt_regs, dx) - base) / 8;
	__u32 o_si = (bpf_core_field_offset(struct pt_regs, si) - base) / 8;
	__u32 o_di = (bpf_core_field_offset(struct pt_regs, di) - base) / 8;
	__u64 a[6];
	a[0] = span[o_di & 7];
	a[1] = span[o_si & 7];
	a[2] = span[o_dx & 7];
	a[3] = span[0];
	a[4] = span[o_r8 & 7];
	a[5] = span[o_r9 & 7];
	return sys_enter_common(c, id, a);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(tether_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct pending *p = pending_of(t);
	if (!p || !p->nr)
		return 0;
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (p->nr != nr) {
		p->nr = 0;
		return 0;
	}
	if (!interesting(nr))
		return 0;
	return emit_syscall(nr, ret, p, t);
}

/* ---- network isolation (cgroup sock_addr) ---------------------------------------------- */

static __always_inline int net_verdict(struct bpf_sock_addr *ctx, const int v6)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&isolated_cgrps, &cg))
		return 1;
	count(TETHER_C_NET_DENIED);
	struct tether_net_denied *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	__builtin_memset(&e->hdr, 0, sizeof(e->hdr));
	e->hdr.kind = TETHER_EV_NET_DENIED;
	e->hdr.flags = TETHER_F_WATCHED;
	e->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	e->hdr.cgroup_id = cg;
	e->hdr.pid = id >> 32;
	e->hdr.tid = (__u32)id;
	e->hdr.uid = (__u32)ug;
	e->hdr.gid = ug >> 32;
	e->hdr.loginuid = (__u32)-1;
	bpf_get_current_comm(&e->hdr.comm, sizeof(e->hdr.comm));
	e->family = ctx->user_family;
	e->port = bpf_ntohs((__u16)ctx->user_port);
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (!v6) {
		__u32 ip4 = ctx->user_ip4;
		__builtin_memcpy(e->addr, &ip4, 4);
	} else {
		__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
		__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
		__builtin_memcpy(e->addr, &w0, 4);
		__builtin_memcpy(e->addr + 4, &w1, 4);
		__builtin_memcpy(e->addr + 8, &w2, 4);
		__builtin_memcpy(e->addr + 12, &w3, 4);
	}
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag(cfg()));
	return 0;
}

SEC("cgroup/connect4")
int tether_connect4(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 0); }

SEC("cgroup/connect6")
int tether_connect6(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 1); }

SEC("cgroup/sendmsg4")
int tether_sendmsg4(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 0); }

SEC("cgroup/sendmsg6")
int tether_sendmsg6(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 1); }

/* ---- BPF LSM (loaded only where the kernel accepts LSM programs) ----------------------- */

static __always_inline int lsm_exec_verdict(struct linux_binprm *bprm)
{
	struct tether_config *c = cfg();
	__u64 cg = bpf_get_current_cgroup_id();
	if (!c || !is_watched(c, cg))
		return 0;
	char path[TETHER_PATH_LEN];
	long n = bpf_probe_read_kernel_str(path, sizeof(path), BPF_CORE_READ(bprm, filename));
	if (n <= 0)
		return 0;
	/* basename, truncated like the task comm */
	int base = 0;
	for (int i = 0; i < TETHER_PATH_LEN; i++) {
		if (i >= n)
			break;
		if (path[i] == '/')
			base = i + 1;
	}
	struct tether_deny_key key = { .cgroup_id = cg };
	for (int i = 0; i < TETHER_COMM_LEN - 1; i++) {
		int j = (base + i) & (TETHER_PATH_LEN - 1);
		if (base + i >= n)
			break;
		key.comm[i] = path[j];
		if (!path[j])
			break;
	}
	struct tether_deny_val *d = bpf_map_lookup_elem(&deny_exec, &key);
	if (!d) {
		key.cgroup_id = 0;
		d = bpf_map_lookup_elem(&deny_exec, &key);
	}
	if (d && (d->action & TETHER_DENY_KILL)) {
		count(TETHER_C_EXEC_KILLED);
		return -EPERM;
	}
	return 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(tether_lsm_exec, struct linux_binprm *bprm, int ret)
{
	if (ret != 0)
		return ret;
	return lsm_exec_verdict(bprm);
}

