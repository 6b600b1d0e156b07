//! The rendezvous of launched ranks, and the CPU backend across processes: a TCP star around rank 0 at
//! MASTER_ADDR:MASTER_PORT. Every other rank connects and says who it is; an all-reduce sends each
//! rank's values to rank 0, which adds them in rank order and sends the sum back. NCCL ranks use the
//! same connections once, to share NCCL's unique id ([`TcpStar::broadcast`]).
use super::{peer_lost, Reducer};
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::Tensor;

const MAGIC: u32 = 0x5333_5054; // "S3PT"
const TIMEOUT_HINT: &str = "S3PET_DIST_TIMEOUT sets the seconds";

enum Links {
    /// Rank 0: the streams of ranks 1..size, in rank order.
    Root(Vec<TcpStream>),
    Leaf(TcpStream),
}

pub struct TcpStar {
    rank: usize,
    links: Mutex<Links>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| peer_lost(format!("{what}: {e} (that rank failed or exited)"))
}

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

impl TcpStar {
    /// Connects rank `rank` of `size` to the star at `addr` (rank 0 listens there), waiting up to
    /// `timeout` for every rank.
    pub fn connect(addr: &str, rank: usize, size: usize, timeout: Duration) -> Result<Self> {
        let links = if rank == 0 {
            Links::Root(accept(addr, size, timeout)?)
        } else {
            Links::Leaf(dial(addr, rank, size, timeout)?)
        };
        Ok(TcpStar { rank, links: Mutex::new(links) })
    }

    /// Rank 0's `data` on every rank (the others' is overwritten).
    pub fn broadcast(&self, data: &mut [u8]) -> Result<()> {
        let mut links = self.links.lock().map_err(|_| Error::Msg("distributed: poisoned link".into()))?;
        match &mut *links {
            Links::Root(peers) => {
                for (i, s) in peers.iter_mut().enumerate() {
                    s.write_all(data).map_err(io(format!("sending to rank {}", i + 1)))?;
                }
            }
            Links::Leaf(s) => s.read_exact(data).map_err(io("receiving from rank 0".into()))?,
        }
        Ok(())
    }

    /// Sums `values` over every rank (rank order), on every rank.
    fn reduce(&self, values: Vec<f32>) -> Result<Vec<f32>> {
        let mut links = self.links.lock().map_err(|_| Error::Msg("distributed: poisoned link".into()))?;
        match &mut *links {
            Links::Root(peers) => {
                let mut parts = vec![values];
                for (i, s) in peers.iter_mut().enumerate() {
                    parts.push(recv(s).map_err(io(format!("receiving from rank {}", i + 1)))?);
                }
                let sum = super::sum_in_rank_order(&parts)?;
                for (i, s) in peers.iter_mut().enumerate() {
                    send(s, &sum).map_err(io(format!("sending to rank {}", i + 1)))?;
                }
                Ok(sum)
            }
            Links::Leaf(s) => {
                send(s, &values).map_err(io("sending to rank 0".into()))?;
                recv(s).map_err(io("receiving from rank 0".into()))
            }
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
}

impl Reducer for TcpStar {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let sum = self.reduce(super::host_values(t)?)?;
        super::write_values(t, &sum);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "tcp"
    }
}

fn send(s: &mut TcpStream, v: &[f32]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + 4 * v.len());
    bytes.extend((v.len() as u64).to_le_bytes());
    v.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
    s.write_all(&bytes)
}

fn recv(s: &mut TcpStream) -> std::io::Result<Vec<f32>> {
    let mut n = [0u8; 8];
    s.read_exact(&mut n)?;
    let mut bytes = vec![0u8; 4 * u64::from_le_bytes(n) as usize];
    s.read_exact(&mut bytes)?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn rendezvous_error(addr: &str, msg: String) -> Error {
    Error::Msg(format!("distributed: rendezvous at {addr}: {msg}"))
}

/// Rank 0: listens at `addr` and takes one connection from each other rank.
fn accept(addr: &str, size: usize, timeout: Duration) -> Result<Vec<TcpStream>> {
    let listener =
        TcpListener::bind(addr).map_err(|e| rendezvous_error(addr, format!("cannot listen: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| rendezvous_error(addr, e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<Option<TcpStream>> = (1..size).map(|_| None).collect();
    while peers.iter().any(|p| p.is_none()) {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)
                    .and_then(|_| s.set_nodelay(true))
                    .map_err(|e| rendezvous_error(addr, e.to_string()))?;
                let hello = [read_u32(&mut s), read_u32(&mut s), read_u32(&mut s)];
                let [m, r, n] = hello.map(|x| x.unwrap_or(0) as usize);
                if m != MAGIC as usize || n != size || r == 0 || r >= size || peers[r - 1].is_some() {
                    return Err(rendezvous_error(addr, format!("a peer said rank {r} of {n}, expected a new rank of {size} (another launch on this port?)")));
                }
                peers[r - 1] = Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                let missing: Vec<String> = peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_none())
                    .map(|(i, _)| (i + 1).to_string())
                    .collect();
                let why = if e.kind() == std::io::ErrorKind::WouldBlock {
                    format!("within {} s ({TIMEOUT_HINT})", timeout.as_secs())
                } else {
                    e.to_string()
                };
                return Err(rendezvous_error(
                    addr,
                    format!("rank(s) {} did not connect {why}", missing.join(", ")),
                ));
            }
        }
    }
    Ok(peers.into_iter().flatten().collect())
}

/// Rank `rank` > 0: connects to rank 0 (retrying until it listens) and says who it is.
fn dial(addr: &str, rank: usize, size: usize, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                s.set_nodelay(true).map_err(|e| rendezvous_error(addr, e.to_string()))?;
                let mut hello = Vec::new();
                [MAGIC, rank as u32, size as u32].iter().for_each(|x| hello.extend(x.to_le_bytes()));
                s.write_all(&hello).map_err(|e| rendezvous_error(addr, e.to_string()))?;
                return Ok(s);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let why =
                    format!("rank 0 is not listening after {} s ({TIMEOUT_HINT}): {e}", timeout.as_secs());
                return Err(rendezvous_error(addr, why));
            }
        }
    }
}
