/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Capability probes: each program is the smallest one of its kind. The loader loads
 * (and where it must, attaches and detaches) each to learn what this kernel accepts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("lsm/bprm_check_security")
int BPF_PROG(probe_lsm, struct linux_binprm *bprm, int ret)
{
	return ret;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}

SEC("cgroup/connect4")
int probe_sock_addr(struct bpf_sock_addr *ctx)
{
	return 1;
}

/* never signals: the pid it waits for does not exist; the verifier checks the helper */
SEC("raw_tp/sys_enter")
int BPF_PROG(probe_send_signal, struct pt_regs *regs, long id)
{
	if ((bpf_get_current_pid_tgid() >> 32) == 0xffffffff)
		bpf_send_signal(0);
	return 0;
}
