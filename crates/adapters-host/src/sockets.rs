//! Which TCP ports a process group listens on, read from `/proc` (proc(5): `/proc/<pid>/fd`
//! links name sockets as `socket:[<inode>]`; `/proc/<pid>/net/tcp` and `tcp6` list sockets with
//! their state, `0A` being LISTEN, and inode). Used to find the port an engine bound when it was
//! started on a free port (`--port 0`).

use std::collections::{BTreeSet, HashSet};
use std::fs;

use crate::process::running_members;

/// The ports members of process group `pgid` listen on, sorted; empty when none (yet) or when
/// `/proc` cannot tell.
pub fn listening_ports(pgid: u32) -> Vec<u16> {
    let Some(members) = running_members(pgid) else {
        return Vec::new();
    };
    let mut inodes = HashSet::new();
    for pid in &members {
        let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    let mut ports = BTreeSet::new();
    for pid in &members {
        for table in ["tcp", "tcp6"] {
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            ports.extend(listening_in(&text, &inodes));
        }
    }
    ports.into_iter().collect()
}

/// The local ports of LISTEN sockets in a `/proc/net/tcp` table whose inode is in `inodes`.
fn listening_in(table: &str, inodes: &HashSet<u64>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != "0A" || !inodes.contains(&inode.parse::<u64>().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F91 00000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0\n";
        let inodes: HashSet<u64> = [4242, 4243].into_iter().collect();
        assert_eq!(listening_in(table, &inodes), vec![8080]);
        assert!(listening_in(table, &HashSet::new()).is_empty());
    }

    #[test]
    fn finds_the_port_this_process_listens_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let own_group = nix::unistd::getpgrp().as_raw() as u32;
        assert!(listening_ports(own_group).contains(&port));
    }
}
