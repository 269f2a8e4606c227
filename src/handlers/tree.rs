//! The processes a program started, wherever they went: its process group, and every
//! descendant, also those that left the group with `setsid` and were orphaned.
//!
//! The program's first process is made a child subreaper (`PR_SET_CHILD_SUBREAPER`, kept
//! across exec), so while it runs, an orphan among its descendants is re-parented to it and
//! not to init: a walk of `/proc` from it finds them all. The walk also follows the
//! processes seen before (by pid and start time, so a reused pid is not mistaken for one),
//! which keeps the ones orphaned when the program itself ends. A stop signals them all;
//! the kill stops them first (SIGSTOP, until no new one appears: a stopped process cannot
//! fork) and then kills them, so none escapes by forking while the others die.

use std::collections::HashMap;

/// One process as `/proc/<pid>/stat` shows it.
struct Stat {
    ppid: libc::pid_t,
    pgrp: libc::pid_t,
    start: u64,
    zombie: bool,
}

fn stat(pid: libc::pid_t) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&text)
}

/// `pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
/// stime cutime cstime priority nice threads itrealvalue starttime …`; comm may hold spaces
/// and parentheses.
fn parse(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every live process on the machine.
fn all() -> HashMap<libc::pid_t, Stat> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        if let Some(s) = stat(pid) {
            if !s.zombie {
                out.insert(pid, s);
            }
        }
    }
    out
}

/// The processes of one program.
pub struct Tree {
    leader: libc::pid_t,
    /// pid → start time of every live process found so far.
    known: HashMap<libc::pid_t, u64>,
}

impl Tree {
    pub fn new(leader: libc::pid_t) -> Self {
        Tree { leader, known: HashMap::new() }
    }

    /// Looks again: the leader, its group, what was known and still lives, `extra` (the
    /// members of the program's cgroup), and every descendant of those. Returns how many
    /// live processes the program has.
    pub fn refresh(&mut self, extra: &[libc::pid_t]) -> usize {
        let procs = all();
        let mut found: HashMap<libc::pid_t, u64> = HashMap::new();
        for (pid, s) in &procs {
            let was_known = self.known.get(pid) == Some(&s.start);
            if *pid == self.leader || s.pgrp == self.leader || was_known || extra.contains(pid) {
                found.insert(*pid, s.start);
            }
        }
        // Descendants: until a pass adds nothing.
        loop {
            let before = found.len();
            for (pid, s) in &procs {
                if !found.contains_key(pid) && found.contains_key(&s.ppid) {
                    found.insert(*pid, s.start);
                }
            }
            if found.len() == before {
                break;
            }
        }
        self.known = found;
        self.known.len()
    }

    /// Whether any process of the program is left (after a fresh look).
    pub fn alive(&mut self, extra: &[libc::pid_t]) -> bool {
        self.refresh(extra) > 0
    }

    /// Sends `sig` to the group and to every known process that is still the one seen.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe {
            libc::kill(-self.leader, sig);
        }
        for (pid, start) in &self.known {
            if stat(*pid).is_some_and(|s| s.start == *start && !s.zombie) {
                // SAFETY: as above, one process.
                unsafe {
                    libc::kill(*pid, sig);
                }
            }
        }
    }

    /// Stops every process of the program, then kills them all.
    pub fn kill(&mut self, extra: &[libc::pid_t]) {
        let mut seen = 0;
        // Each round stops what it finds; a process forked meanwhile is found by the next.
        for _ in 0..64 {
            let now = self.refresh(extra);
            self.signal(libc::SIGSTOP);
            if now == seen {
                break;
            }
            seen = now;
        }
        self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse(line).unwrap();
        assert_eq!((s.ppid, s.pgrp, s.start, s.zombie), (1, 4242, 987654, false));
        let me = stat(std::process::id() as libc::pid_t).unwrap();
        assert!(me.start > 0 && !me.zombie);
    }
}
