//! `BENCHMARKS.md` is written by several benchmark binaries, each owning one `## ` section:
//! [`replace_section`] swaps one section and leaves the others (and their order) alone.

use std::path::Path;

/// The file's title and introduction, for a file that does not exist yet.
const PREAMBLE: &str = "# Benchmarks\n\nMeasurements of Ferry on generated data, each with the command that \
                        reproduces it.\n\n";

/// `existing` (a whole BENCHMARKS.md, or `None` for a new one) with the section that starts
/// with the line `heading` replaced by `section` (which starts with that heading), or with
/// `section` appended when there is none. A section runs to the next `## ` heading.
pub fn replace_section(existing: Option<&str>, heading: &str, section: &str) -> String {
    let Some(existing) = existing else { return format!("{PREAMBLE}{section}") };
    let mut offset = 0;
    let mut start = None;
    let mut end = None;
    for line in existing.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if start.is_none() && trimmed == heading {
            start = Some(offset);
        } else if start.is_some() && trimmed.starts_with("## ") {
            end = Some(offset);
            break;
        }
        offset += line.len();
    }
    match start {
        None => {
            let sep = if existing.ends_with("\n\n") || existing.is_empty() {
                ""
            } else if existing.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{existing}{sep}{section}")
        }
        Some(at) => {
            let rest = end.map_or("", |n| &existing[n..]);
            let gap = if rest.is_empty() || section.ends_with("\n\n") { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &existing[..at])
        }
    }
}

/// Replaces (or appends) one section of the file at `path`, creating it if absent.
pub fn update_file(path: &Path, heading: &str, section: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    std::fs::write(path, replace_section(existing.as_deref(), heading, section))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let section = "## Idle daemon\n\nnew\n";
        let doc =
            "# Benchmarks\n\nintro\n\n## Payload sizes\n\nkeep\n\n## Idle daemon\n\nold\nold\n\n## Other\n\nkeep too\n";
        assert_eq!(
            replace_section(Some(doc), "## Idle daemon", section),
            "# Benchmarks\n\nintro\n\n## Payload sizes\n\nkeep\n\n## Idle daemon\n\nnew\n\n## Other\n\nkeep too\n"
        );
        let last = "# Benchmarks\n\n## Idle daemon\n\nold\n";
        assert_eq!(replace_section(Some(last), "## Idle daemon", section), "# Benchmarks\n\n## Idle daemon\n\nnew\n");
        assert_eq!(replace_section(Some("# B\n"), "## Idle daemon", section), "# B\n\n## Idle daemon\n\nnew\n");
        assert!(replace_section(None, "## Idle daemon", section).starts_with("# Benchmarks\n"));
        // A heading that only starts like ours is not ours.
        let other = "# B\n\n## Idle daemon (old)\n\nkeep\n";
        assert_eq!(
            replace_section(Some(other), "## Idle daemon", section),
            "# B\n\n## Idle daemon (old)\n\nkeep\n\n## Idle daemon\n\nnew\n"
        );
    }
}
