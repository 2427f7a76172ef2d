//! Who may have written a plugin file: its owner and mode, and those of
//! every directory above it.

use std::path::Path;

/// The owner of a file or directory must be root or the current user, and
/// no one else may write to it: not others, and not the group unless it is
/// the owner's own (user-private) group. Sticky directories, whose entries
/// only their owners can replace, may be writable by anyone.
#[cfg(unix)]
pub(super) fn check_owner_and_mode(what: &str, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = unsafe_euid();
    let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode());
    if uid != 0 && uid != me {
        return Err(format!("{what} is owned by {}, not by root or the current user", user_name(uid)));
    }
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky_dir {
        return Err(format!("{what} is world-writable"));
    }
    if mode & 0o020 != 0 && !sticky_dir && !is_private_group(uid, gid) {
        return Err(format!("{what} is writable by group {}", group_name(gid)));
    }
    Ok(())
}

/// Every directory from `/` down to `dir` (canonical).
#[cfg(unix)]
pub(super) fn check_directories(dir: &Path) -> Result<(), String> {
    for d in dir.ancestors() {
        let meta = std::fs::metadata(d).map_err(|e| format!("cannot read directory {}: {e}", d.display()))?;
        check_owner_and_mode(&format!("its directory {}", d.display()), &meta)?;
    }
    Ok(())
}

#[cfg(unix)]
fn unsafe_euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether `gid` is the user-private group of `uid`: the user's primary
/// group, named like the user.
#[cfg(unix)]
fn is_private_group(uid: u32, gid: u32) -> bool {
    match (passwd_entry(uid), group_name_of(gid)) {
        (Some((name, primary)), Some(group)) => primary == gid && group == name,
        _ => false,
    }
}

#[cfg(unix)]
fn user_name(uid: u32) -> String {
    passwd_entry(uid).map_or_else(|| format!("uid {uid}"), |(name, _)| format!("user {name} (uid {uid})"))
}

#[cfg(unix)]
fn group_name(gid: u32) -> String {
    group_name_of(gid).map_or_else(|| format!("gid {gid}"), |name| format!("{name} (gid {gid})"))
}

/// The user name and primary group of `uid`.
#[cfg(unix)]
fn passwd_entry(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; getpwuid_r writes only within them.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
    Some((name, pwd.pw_gid))
}

/// The name of group `gid`.
#[cfg(unix)]
fn group_name_of(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: all-zero is a valid `group` (null pointers, zero id).
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; getgrgid_r writes only within them.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string in `buf`.
    Some(unsafe { std::ffi::CStr::from_ptr(grp.gr_name) }.to_string_lossy().into_owned())
}
