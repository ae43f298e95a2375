//! `banger events [--json]`: lifecycle events as the daemon reports them
//! (`GET /v1/events`), one line each, until Ctrl-C or the daemon stops.

use anyhow::Result;
use banger_proto::event::Event;

use crate::client::Client;

pub async fn run(client: &Client, json: bool) -> Result<()> {
    client
        .get_lines("/v1/events", |line| {
            print_line(line, json);
            Ok(true)
        })
        .await?;
    if !crate::output::quiet() {
        eprintln!("bangerd ended the stream (it stopped)");
    }
    Ok(())
}

fn print_line(line: &[u8], json: bool) {
    let Ok(event) = serde_json::from_slice::<Event>(line) else {
        return;
    };
    if json {
        if let Ok(text) = serde_json::to_string(&event) {
            println!("{text}");
        }
        return;
    }
    println!("{}", human(&event));
}

/// `2026-12-03T20:50:01.123Z  vm        running  box (0123456789ab)`.
fn human(event: &Event) -> String {
    let what = match event.missed {
        Some(missed) => format!("{missed} events missed (this reader was slow)"),
        None => format!("{} ({})", event.name, event.id),
    };
    format!(
        "{}  {:<8}  {:<8}  {what}",
        event.at,
        event.object.as_str(),
        event.action
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::event::EventObject;

    #[test]
    fn a_line_says_when_what_and_which() {
        let event = Event {
            at: "2026-12-03T20:50:01.123Z".into(),
            object: EventObject::Vm,
            action: "running".into(),
            id: "0123456789ab".into(),
            name: "box".into(),
            missed: None,
        };
        assert_eq!(
            human(&event),
            "2026-12-03T20:50:01.123Z  vm        running   box (0123456789ab)"
        );
    }
}
