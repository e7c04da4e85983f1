//! Whether the tests run as root: the one place every test binary asks. Privileged tests
//! (`BPF_PROG_TEST_RUN`, network namespaces) need it; without it they are reported as ignored,
//! never as passed.

/// True when the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
