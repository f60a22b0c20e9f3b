//! libubootenv's `fw_env.config`, so the agent reads the same file as `fw_printenv`.
//!
//! Each line is `device offset size [sector-size [sectors]]`, scanned as libubootenv scans it
//! with `sscanf("%ms %lli %zx %zx %lx")`:
//!
//! | field | base | example |
//! |---|---|---|
//! | device | path | `/dev/mmcblk0boot1` |
//! | offset | C rules: `0x` hex, leading `0` octal, else decimal; negative counts back from the end of a block device | `0x3fe000`, `-0x4000` |
//! | size | always hex, `0x` optional | `0x2000`, `2000` (= 8 KiB) |
//! | sector size | always hex | `0x20000` |
//! | sectors | always hex | `1` |
//!
//! A line starting with `#` is a comment; a line where fewer than the first three fields scan
//! is ignored, as libubootenv ignores it. The first device line is copy 1, the second (if any)
//! copy 2; later lines are ignored. Both copies must have the same size.

use std::path::{Path, PathBuf};

use super::{Error, MAX_ENV_SIZE, MIN_ENV_SIZE};

/// One device line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// The file or device holding the copy.
    pub device: PathBuf,
    /// Byte offset of the copy; negative counts back from the end of a block device.
    pub offset: i64,
    /// Size of the copy in bytes.
    pub size: usize,
    /// Erase-block size (used by MTD devices only).
    pub sector_size: Option<u64>,
    /// Erase blocks per copy (used by MTD devices only).
    pub sectors: Option<u64>,
    /// The 1-based line it came from, for error messages.
    pub line: usize,
}

/// A parsed `fw_env.config`: one region (single copy) or two (redundant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvConfig {
    /// Where the config came from.
    pub path: PathBuf,
    /// Copy 1 and, when redundant, copy 2.
    pub regions: Vec<RegionConfig>,
}

impl FwEnvConfig {
    /// Reads and parses the config file at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| Error::io("reading U-Boot env config", path, None, err))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let error = |line: Option<usize>, detail: String| Error::Config {
            path: path.to_owned(),
            line,
            detail,
        };
        let mut regions: Vec<RegionConfig> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.starts_with('#') {
                continue;
            }
            let Some(region) = scan_line(line, line_no) else {
                continue;
            };
            if region.size == 0 {
                return Err(error(Some(line_no), "size is zero".into()));
            }
            if !(MIN_ENV_SIZE..=MAX_ENV_SIZE).contains(&region.size) {
                return Err(error(
                    Some(line_no),
                    format!(
                        "size {:#x} is outside {MIN_ENV_SIZE:#x}..={MAX_ENV_SIZE:#x} (the size \
                         field is hexadecimal even without 0x)",
                        region.size
                    ),
                ));
            }
            if let Some(first) = regions.first()
                && first.size != region.size
            {
                return Err(error(
                    Some(line_no),
                    format!(
                        "copy 2 has size {:#x} but copy 1 has size {:#x}; redundant copies must \
                         be the same size",
                        region.size, first.size
                    ),
                ));
            }
            regions.push(region);
            if regions.len() == 2 {
                break;
            }
        }
        if regions.is_empty() {
            return Err(error(
                None,
                "no line of the form `device offset size`".into(),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            regions,
        })
    }
}

/// Scans one line as libubootenv's `sscanf` does; `None` when fewer than three fields convert.
fn scan_line(line: &str, line_no: usize) -> Option<RegionConfig> {
    let mut rest = line.trim_start();
    let device_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if device_end == 0 {
        return None;
    }
    let device = PathBuf::from(&rest[..device_end]);
    rest = &rest[device_end..];
    let offset = scan_int(&mut rest, None)?;
    let size = scan_int(&mut rest, Some(16))?;
    let sector_size = scan_int(&mut rest, Some(16));
    let sectors = sector_size.and_then(|_| scan_int(&mut rest, Some(16)));
    Some(RegionConfig {
        device,
        offset: i64::try_from(offset).ok()?,
        size: usize::try_from(size).ok()?,
        sector_size: sector_size.and_then(|v| u64::try_from(v).ok()),
        sectors: sectors.and_then(|v| u64::try_from(v).ok()),
        line: line_no,
    })
}

/// One `strtoll`-style conversion after optional whitespace: sign, then `0x` hex, `0` octal or
/// decimal when `radix` is `None` (`%lli`), or `radix` digits with an optional `0x` (`%x`).
/// Consumes what it converts; `None` (consuming nothing) when no digit follows.
fn scan_int(rest: &mut &str, radix: Option<u32>) -> Option<i128> {
    let mut s = rest.trim_start();
    let negative = s.starts_with('-');
    if negative || s.starts_with('+') {
        s = &s[1..];
    }
    let has_hex_prefix = (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].starts_with(|c: char| c.is_ascii_hexdigit());
    let radix = match radix {
        Some(16) | None if has_hex_prefix => {
            s = &s[2..];
            16
        }
        Some(radix) => radix,
        None if s.starts_with('0') => 8,
        None => 10,
    };
    let digits = s.find(|c: char| !c.is_digit(radix)).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    // More than 2^96 is no offset or size; refuse rather than wrap as C would.
    let value = i128::from_str_radix(&s[..digits], radix)
        .ok()
        .filter(|v| v.abs() < 1 << 96)?;
    *rest = &s[digits..];
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FwEnvConfig, Error> {
        FwEnvConfig::parse(text, Path::new("/etc/fw_env.config"))
    }

    #[test]
    fn redundant_emmc_config() {
        let config = parse(
            "# Device  offset  size\n\
             /dev/mmcblk0boot1 0x3fe000 0x2000\n\
             \n\
             /dev/mmcblk0boot1\t-0x2000\t2000 0x200 4\n",
        )
        .unwrap();
        assert_eq!(config.regions.len(), 2);
        let [a, b] = &config.regions[..] else {
            unreachable!()
        };
        assert_eq!(
            (a.device.as_path(), a.offset, a.size),
            (Path::new("/dev/mmcblk0boot1"), 0x3f_e000, 0x2000)
        );
        assert_eq!((a.sector_size, a.sectors, a.line), (None, None, 2));
        assert_eq!(
            (b.offset, b.size, b.sector_size, b.sectors, b.line),
            (-0x2000, 0x2000, Some(0x200), Some(4), 4)
        );
    }

    #[test]
    fn offsets_follow_c_integer_rules_sizes_are_hex() {
        let config = parse("/dev/sda 010 10\n").unwrap();
        assert_eq!((config.regions[0].offset, config.regions[0].size), (8, 16));
        let config = parse("/dev/sda 4096 0x10\n").unwrap();
        assert_eq!(config.regions[0].offset, 4096);
    }

    #[test]
    fn unscannable_lines_are_skipped_and_third_line_ignored() {
        let config = parse(
            "   # indented comment 0 10\n\
             /dev/sda 0x0\n\
             /dev/sda zero 0x10\n\
             /dev/sdb 0 0x10\n\
             /dev/sdc 0x10 0x10\n\
             /dev/sdd 0 0x20\n",
        )
        .unwrap();
        let devices: Vec<_> = config
            .regions
            .iter()
            .map(|r| r.device.to_str().unwrap())
            .collect();
        assert_eq!(devices, ["/dev/sdb", "/dev/sdc"]);
    }

    #[test]
    fn bad_configs_are_refused_with_line_numbers() {
        let cases = [
            ("", "no line of the form"),
            ("/dev/sda 0 0\n", "line 1: size is zero"),
            (
                "/dev/sda 0 0x10\n/dev/sda 0x10 0x20\n",
                "line 2: copy 2 has size 0x20",
            ),
            (
                "/dev/sda 0 0x1000000\n",
                "line 1: size 0x1000000 is outside",
            ),
            ("/dev/sda 0 4\n", "size 0x4 is outside"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(
                err.starts_with("U-Boot env config /etc/fw_env.config"),
                "{err}"
            );
        }
    }
}
