//! A tiny UDP tool for checking what a lab's NAT does, run inside lab hosts.
//!
//! - `w2p-udp-probe echo IP:PORT`: answers every datagram with the address it came from, for 30 s.
//! - `w2p-udp-probe ask ECHO1 ECHO2`: from one socket, asks both echo servers and prints the two
//!   public addresses they saw, one per line (the same twice behind a cone NAT, not behind a
//!   symmetric one).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |s: &String| s.parse::<SocketAddr>().map_err(|e| format!("{s}: {e}"));
    match args.as_slice() {
        [mode, at] if mode == "echo" => echo(addr(at)?),
        [mode, a, b] if mode == "ask" => ask(&[addr(a)?, addr(b)?]),
        _ => Err("usage: w2p-udp-probe echo IP:PORT | ask ECHO1 ECHO2".into()),
    }
}

fn echo(at: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind(at).map_err(|e| format!("bind {at}: {e}"))?;
    println!("listening");
    let end = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.to_string().as_bytes(), from);
        }
    }
    Ok(())
}

fn ask(servers: &[SocketAddr]) -> Result<(), String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    for server in servers {
        // Datagrams may be lost (a NAT entry still being made): ask a few times.
        let seen = (0..10).find_map(|_| {
            socket.send_to(b"?", server).ok()?;
            let (n, from) = socket.recv_from(&mut buf).ok()?;
            (from == *server).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        println!("{}", seen.ok_or_else(|| format!("no answer from {server}"))?);
    }
    Ok(())
}
