//! Step 3 of vetting: the ELF headers of a plugin file, read through the
//! vetted handle, so that a file cut short (or built for another machine)
//! is refused with a reason instead of crashing the process when mapped.

use super::{LoadError, Vetted};

/// `e_type` of a shared library (and of a position-independent executable).
#[cfg(unix)]
const ELF_SHARED_OBJECT: u16 = 3;

/// `e_machine` of this host's libraries, where known.
#[cfg(unix)]
const HOST_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else if cfg!(target_arch = "x86") {
    Some(3)
} else if cfg!(target_arch = "arm") {
    Some(40)
} else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
    Some(243)
} else if cfg!(target_arch = "powerpc64") {
    Some(21)
} else if cfg!(target_arch = "powerpc") {
    Some(20)
} else if cfg!(target_arch = "s390x") {
    Some(22)
} else if cfg!(target_arch = "loongarch64") {
    Some(258)
} else {
    None
};

/// A name for an ELF `e_machine` value.
#[cfg(unix)]
fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "x86 (32-bit)",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC 64",
        22 => "s390",
        40 => "ARM (32-bit)",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        _ => "another machine",
    }
}

/// Step 3: an ELF file must hold every segment and table its headers point
/// to. A file cut short would otherwise be mapped, and the first access past
/// its end would kill the process (SIGBUS) with no message.
#[cfg(unix)]
pub(super) fn check_elf(v: &mut Vetted) -> Result<(), LoadError> {
    use std::os::unix::fs::FileExt;
    let not_lib = |detail: String| LoadError::NotALibrary { path: v.path.clone(), detail };
    let mut header = [0u8; 64];
    let n = v.file.read_at(&mut header, 0).map_err(|e| not_lib(format!("cannot read: {e}")))?;
    if n >= 4 && header[..4] == *b"\x7fELF" && n < 52 {
        return Err(not_lib(format!("it is cut short: its ELF header needs 52 to 64 bytes, but the file has {n}")));
    }
    if n < 52 || header[..4] != *b"\x7fELF" {
        if cfg!(target_os = "linux") {
            return Err(not_lib("it is not an ELF file".into()));
        }
        return Ok(());
    }
    let is64 = match header[4] {
        1 => false,
        2 => true,
        _ => return Err(not_lib("unknown ELF class".into())),
    };
    let little = match header[5] {
        1 => true,
        2 => false,
        _ => return Err(not_lib("unknown ELF byte order".into())),
    };
    // The loader would refuse these with a terse or misleading message
    // (another machine's library reads as "No such file or directory").
    let bits = |wide: bool| if wide { 64 } else { 32 };
    if is64 != cfg!(target_pointer_width = "64") {
        return Err(not_lib(format!(
            "it is a {}-bit ELF file; this host loads {}-bit libraries",
            bits(is64),
            bits(!is64)
        )));
    }
    if little != cfg!(target_endian = "little") {
        let order = |l: bool| if l { "little-endian" } else { "big-endian" };
        return Err(not_lib(format!("it is a {} ELF file; this host is {}", order(little), order(!little))));
    }
    let u16_at = |b: &[u8], o: usize| {
        let x = [b[o], b[o + 1]];
        if little {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let x = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        if little {
            u64::from_le_bytes(x)
        } else {
            u64::from_be_bytes(x)
        }
    };
    if is64 && n < 64 {
        return Err(not_lib(format!("it is cut short: its ELF header needs 64 bytes, but the file has {n}")));
    }
    match u16_at(&header, 16) {
        ELF_SHARED_OBJECT => {}
        1 => return Err(not_lib("it is an object file (.o), not a shared library".into())),
        2 => return Err(not_lib("it is an executable, not a shared library".into())),
        4 => return Err(not_lib("it is a core dump, not a shared library".into())),
        other => return Err(not_lib(format!("it is not a shared library (ELF type {other})"))),
    }
    let machine = u16_at(&header, 18);
    if let Some(host) = HOST_MACHINE.filter(|&host| host != machine) {
        return Err(not_lib(format!(
            "it is built for {} (ELF machine {machine}); this host is {}",
            machine_name(machine),
            machine_name(host)
        )));
    }
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if is64 {
        (
            u64_at(&header, 32),
            u64_at(&header, 40),
            u16_at(&header, 54),
            u16_at(&header, 56),
            u16_at(&header, 58),
            u16_at(&header, 60),
        )
    } else {
        (
            u64::from(u32_at(&header, 28)),
            u64::from(u32_at(&header, 32)),
            u16_at(&header, 42),
            u16_at(&header, 44),
            u16_at(&header, 46),
            u16_at(&header, 48),
        )
    };
    let size = v.size;
    let cut = |what: &str, end: u64| {
        not_lib(format!(
            "it is cut short: its {what} ends at byte {end}, but the file has {size} bytes (an interrupted copy?)"
        ))
    };
    let ph_end = phoff.saturating_add(u64::from(phentsize) * u64::from(phnum));
    if ph_end > size {
        return Err(cut("program header table", ph_end));
    }
    if shnum > 0 {
        let sh_end = shoff.saturating_add(u64::from(shentsize) * u64::from(shnum));
        if sh_end > size {
            return Err(cut("section header table", sh_end));
        }
    }
    let mut table = vec![0u8; (ph_end - phoff) as usize];
    v.file.read_exact_at(&mut table, phoff).map_err(|e| not_lib(format!("cannot read its program headers: {e}")))?;
    for entry in table.chunks_exact(usize::from(phentsize.max(1))) {
        let (offset, filesz) = if is64 {
            if entry.len() < 40 {
                return Err(not_lib("malformed program header".into()));
            }
            (u64_at(entry, 8), u64_at(entry, 32))
        } else {
            if entry.len() < 20 {
                return Err(not_lib("malformed program header".into()));
            }
            (u64::from(u32_at(entry, 4)), u64::from(u32_at(entry, 16)))
        };
        let end = offset.saturating_add(filesz);
        if end > size {
            return Err(cut("segment", end));
        }
    }
    Ok(())
}
