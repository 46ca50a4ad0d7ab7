//! The interactive menu of the original design: numbered options, prompts, and new messages
//! printed under the menu as they arrive (`> Message from 123: Hello`).

use std::io::Write;

use tokio::sync::mpsc;
use whatsap2p_client::{Client, Event, Number, Presence};

use crate::input::{next_line, Line};

const OPTIONS: &str = "[+] Options:
1 - Ping user
2 - Send Message
3 - View Contacts
4 - Add New Contact
5 - Logout";

const SHORT_OPTIONS: &str = "[+] 1 Ping · 2 Send · 3 Contacts · 4 Add contact · 5 Logout";

/// What the next input line answers.
#[derive(Clone, Debug)]
enum Prompt {
    Choice,
    PingNumber,
    SendNumber,
    SendText(Number),
    AddNumber,
}

impl Prompt {
    fn text(&self) -> &'static str {
        match self {
            Prompt::Choice => "Choose an option: ",
            Prompt::PingNumber => "Number to ping: ",
            Prompt::SendNumber => "Send to number: ",
            Prompt::SendText(_) => "Message: ",
            Prompt::AddNumber => "New contact's number: ",
        }
    }
}

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn prompt(p: &Prompt) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", p.text());
    let _ = out.flush();
}

/// `ip/port`, as the original printed addresses.
fn slash(addr: std::net::SocketAddr) -> String {
    format!("{}/{}", addr.ip(), addr.port())
}

fn describe(p: &Presence) -> String {
    match p.online {
        Some(addr) => format!("{} - Online ({})", p.number, slash(addr)),
        None => format!("{} - Offline", p.number),
    }
}

fn show_event(e: Event) {
    match e {
        Event::Message { from, text, .. } => say(format!("\n> Message from {from}: {text}")),
        Event::Delivered { to, .. } => say(format!("\n[+] Delivered to {to}")),
        Event::Undelivered { to, reason, .. } => say(format!("\n[!] Not confirmed by {to}: {reason}")),
        Event::Warning { message } => say(format!("\n[!] WARNING: {message}")),
        Event::DirectoryLost { reason } => say(format!("\n[!] Lost the directory server: {reason}")),
        other => say(format!("\n[+] {other:?}")),
    }
}

/// Asks for our number until a valid one is given; `None` at end of input.
pub async fn ask_number() -> anyhow::Result<Option<Number>> {
    say("Welcome!");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    loop {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "Please insert your number: ");
        let _ = out.flush();
        drop(out);
        match next_line(&mut stdin).await? {
            None => return Ok(None),
            Some(Line::Text(t)) => match Number::new(&t) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => say(format!("[!] {e}")),
            },
            Some(_) => say("[!] That is not a number"),
        }
    }
}

/// Announces the client as the original did.
pub fn banner(client: &Client) {
    say("[+] Connection successful!");
    say(format!("[+] Server key: {}", client.server_key()));
    say(format!("[+] Your key: {}", client.identity_key()));
    say(format!("[+] Listening at {}", slash(client.published_addr())));
}

/// Runs the menu until Logout, end of input or a signal.
pub async fn run(client: Client, mut events: mpsc::Receiver<Event>) -> anyhow::Result<()> {
    banner(&client);
    say(format!("\n{OPTIONS}\n\n[+] New Messages:"));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut state = Prompt::Choice;
    prompt(&state);
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let line = tokio::select! {
            _ = &mut signal => break,
            Some(e) = events.recv() => {
                show_event(e);
                prompt(&state);
                continue;
            }
            line = next_line(&mut stdin) => line?,
        };
        let line = match line {
            None => break,
            Some(Line::Text(t)) => t,
            Some(Line::TooLong(n)) => {
                say(format!("[!] That line is {n} bytes; too long"));
                prompt(&state);
                continue;
            }
            Some(Line::NotUtf8) => {
                say("[!] That line is not valid UTF-8");
                prompt(&state);
                continue;
            }
        };
        state = match (state, line.trim()) {
            (Prompt::Choice, "") => Prompt::Choice,
            (Prompt::Choice, "1") => Prompt::PingNumber,
            (Prompt::Choice, "2") => Prompt::SendNumber,
            (Prompt::Choice, "3") => {
                match client.contacts().await {
                    Ok(list) if list.is_empty() => say("[+] No contacts yet: add one with 4"),
                    Ok(list) => {
                        say("[+] Contacts:");
                        for c in &list {
                            say(format!("    {}", describe(c)));
                        }
                    }
                    Err(e) => say(format!("[!] {e}")),
                }
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::Choice, "4") => Prompt::AddNumber,
            (Prompt::Choice, "5") => break,
            (Prompt::Choice, other) => {
                say(format!("[!] '{other}' is not an option"));
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::PingNumber | Prompt::SendNumber | Prompt::AddNumber, "") => {
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (p @ (Prompt::PingNumber | Prompt::SendNumber | Prompt::AddNumber), text) => {
                match Number::new(text) {
                    Err(e) => {
                        say(format!("[!] {e}"));
                        p
                    }
                    Ok(n) => match p {
                        Prompt::PingNumber => {
                            match client.ping(&n).await {
                                Ok(p) => say(format!("[+] {}", describe(&p))),
                                Err(e) => say(format!("[!] {e}")),
                            }
                            say(SHORT_OPTIONS);
                            Prompt::Choice
                        }
                        Prompt::AddNumber => {
                            match client.add_contact(&n).await {
                                Ok((true, Some(k))) => say(format!("[+] Added {n} (key {k})")),
                                Ok((true, None)) => say(format!("[+] Added {n} (not registered yet)")),
                                Ok((false, _)) => say(format!("[+] {n} is already a contact")),
                                Err(e) => say(format!("[!] {e}")),
                            }
                            say(SHORT_OPTIONS);
                            Prompt::Choice
                        }
                        _ => Prompt::SendText(n),
                    },
                }
            }
            (Prompt::SendText(to), _) => {
                match client.send(&to, &line).await {
                    Ok(_) => say(format!("[+] Sent to {to}")),
                    Err(e) => say(format!("[!] {e}")),
                }
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
        };
        prompt(&state);
    }
    say("\n[+] Logging out...");
    client.logout().await;
    while let Ok(e) = events.try_recv() {
        show_event(e);
    }
    say("[+] Bye!");
    Ok(())
}
