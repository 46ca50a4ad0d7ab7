//! The lab's NAT routers behave as the kinds they claim: what the NAT-traversal tests rely on.

use std::process::Stdio;

use whatsap2p_netlab::{Host, Lab, LabError, Nat};

const PROBE: &str = env!("CARGO_BIN_EXE_w2p-udp-probe");

/// The lab, or `None` (and a line saying why) on a machine that cannot host one.
fn lab() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(LabError::Unavailable(why)) => {
            eprintln!("SKIPPED: {why}");
            None
        }
        Err(e) => panic!("building the lab: {e}"),
    }
}

/// Starts echo servers on two public hosts; returns them (kept alive by the caller) and their addresses.
fn echoes(lab: &mut Lab) -> (Vec<std::process::Child>, [String; 2]) {
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for name in ["echo1", "echo2"] {
        let host = lab.public_host(name).expect("public host");
        let addr = format!("{}:3478", host.ip);
        let mut child = host
            .command(PROBE)
            .args(["echo", &addr])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the echo probe");
        // Wait for its "listening" line, so the first question is not lost to a race.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("reading the echo's first line");
        assert_eq!(line.trim(), "listening");
        children.push(child);
        addrs.push(addr);
    }
    (children, [addrs[0].clone(), addrs[1].clone()])
}

fn mapped(host: &Host, echoes: &[String; 2]) -> Vec<String> {
    let out = host.run(&[PROBE, "ask", &echoes[0], &echoes[1]]).expect("asking the echoes");
    out.lines().map(str::to_owned).collect()
}

#[test]
fn given_cone_nat_then_one_public_port_for_every_destination() {
    let Some(mut lab) = lab() else { return };
    let (mut children, echoes) = echoes(&mut lab);
    let mut router = lab.router("home", Nat::Cone).expect("router");
    let alice = lab.host_behind(&mut router, "alice").expect("host");
    let seen = mapped(&alice, &echoes);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], seen[1], "a cone NAT keeps the mapping per socket");
    assert!(
        seen[0].starts_with(&format!("{}:", router.public_ip)),
        "{seen:?} is not behind {}",
        router.public_ip
    );
    children.iter_mut().for_each(|c| drop(c.kill()));
}

#[test]
fn given_symmetric_nat_then_a_new_public_port_per_destination() {
    let Some(mut lab) = lab() else { return };
    let (mut children, echoes) = echoes(&mut lab);
    let mut router = lab.router("carrier", Nat::Symmetric).expect("router");
    let bob = lab.host_behind(&mut router, "bob").expect("host");
    let seen = mapped(&bob, &echoes);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "a symmetric NAT maps each destination anew");
    children.iter_mut().for_each(|c| drop(c.kill()));
}

#[test]
fn given_router_then_unsolicited_inbound_is_dropped_and_udp_can_be_blocked() {
    let Some(mut lab) = lab() else { return };
    let (mut children, echoes) = echoes(&mut lab);
    let mut router = lab.router("home", Nat::Cone).expect("router");
    let alice = lab.host_behind(&mut router, "alice").expect("host");
    // A public host cannot reach into the LAN, even at the router's public address.
    let outsider = lab.public_host("outsider").expect("host");
    let poke = outsider.run(&[PROBE, "ask", &format!("{}:3478", router.public_ip), &echoes[1]]);
    assert!(poke.is_err(), "unsolicited inbound got an answer: {poke:?}");
    router.block_udp().expect("blocking UDP");
    assert!(alice.run(&[PROBE, "ask", &echoes[0], &echoes[1]]).is_err(), "UDP still crosses");
    router.allow_udp().expect("allowing UDP");
    assert_eq!(mapped(&alice, &echoes).len(), 2);
    children.iter_mut().for_each(|c| drop(c.kill()));
}
