//! What `sb` prints: plain lines (escaped so each row or change is one line) or JSON lines, and
//! the printing of a one-response command's answer.

use std::io::{IsTerminal, Write};

use base64::Engine as _;
use syncbase_wire::Response;

use crate::failure::{Failure, Outcome, local_codes};
use crate::{Command, Format};

pub(crate) fn json_value(value: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", serde_json::Value::String(text.to_string())),
        Err(_) => (
            "value_base64",
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
        ),
    }
}

/// Standard output, in the format the caller chose.
pub(crate) struct Output {
    /// Plain lines or JSON lines.
    pub(crate) format: Format,
    /// Locked once for the whole command.
    pub(crate) out: std::io::StdoutLock<'static>,
}

impl Output {
    pub(crate) fn line(&mut self, bytes: &[u8]) -> Outcome {
        self.write(bytes, true)
    }

    pub(crate) fn write(&mut self, bytes: &[u8], newline: bool) -> Outcome {
        let write = self
            .out
            .write_all(bytes)
            .and_then(|()| {
                if newline {
                    self.out.write_all(b"\n")
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.out.flush());
        write.map_err(|error| {
            Failure::local(local_codes::OUTPUT, format!("cannot write output: {error}"))
        })
    }

    /// A row's value, exactly: a newline follows only on a terminal, where the prompt would
    /// otherwise run on.
    pub(crate) fn value(&mut self, value: &[u8]) -> Outcome {
        let terminal = std::io::stdout().is_terminal();
        self.write(value, terminal)
    }

    pub(crate) fn json(&mut self, value: serde_json::Value) -> Outcome {
        self.line(value.to_string().as_bytes())
    }

    pub(crate) fn names(&mut self, names: Vec<String>) -> Outcome {
        for name in names {
            match self.format {
                Format::Plain => self.line(name.as_bytes())?,
                Format::Json => self.json(serde_json::json!({ "name": name }))?,
            }
        }
        Ok(())
    }
}

pub(crate) fn print_response(
    output: &mut Output,
    command: &Command,
    response: Response,
) -> Outcome {
    match response {
        Response::Names(names) => output.names(names),
        Response::Value(value) => match (command, output.format) {
            (Command::Get { out: Some(out), .. }, _) => {
                std::fs::write(out, &value).map_err(|error| Failure::file("write", out, error))
            }
            (_, Format::Plain) => output.value(&value),
            (_, Format::Json) => {
                let (field, value) = json_value(&value);
                output.json(serde_json::json!({ field: value }))
            }
        },
        Response::Permissions(permissions) => {
            for (tag, list) in &permissions.0 {
                for (kind, patterns) in [("allow", &list.allowed), ("deny", &list.denied)] {
                    for pattern in patterns {
                        match output.format {
                            Format::Plain => output.line(format!("{}\t{kind}\t{pattern}", tag.name()).as_bytes())?,
                            Format::Json => output.json(serde_json::json!({ "tag": tag.name(), "kind": kind, "pattern": pattern }))?,
                        }
                    }
                }
            }
            Ok(())
        }
        Response::Pulled(reports) => {
            let mut failed = None;
            for report in reports {
                let line = match (&report.error, output.format) {
                    (None, Format::Plain) => format!(
                        "{}\t{} records\t{} bytes\t{:.1} ms",
                        report.member,
                        report.records,
                        report.bytes,
                        report.micros as f64 / 1e3
                    ),
                    (Some(error), Format::Plain) => {
                        format!(
                            "{}\terror[{}]: {}",
                            report.member, error.code, error.message
                        )
                    }
                    (_, Format::Json) => serde_json::json!({
                        "member": report.member,
                        "records": report.records,
                        "bytes": report.bytes,
                        "ms": report.micros as f64 / 1e3,
                        "error": report.error.as_ref().map(|error| serde_json::json!({
                            "code": error.code,
                            "message": error.message,
                        })),
                    })
                    .to_string(),
                };
                output.line(line.as_bytes())?;
                if let Some(error) = report.error {
                    failed = Some(error);
                }
            }
            match failed {
                Some(error) => Err(Failure::Refused(error)),
                None => Ok(()),
            }
        }
        Response::Done | Response::Deleted(_) | Response::Bool(_) | Response::Batch(_) => Ok(()),
        Response::Rows(_)
        | Response::Changes(_)
        | Response::ChangesPart(_)
        | Response::Status(_)
        | Response::LogStatus(_)
        | Response::SyncStatus(_)
        | Response::JoinProgress(_)
        | Response::Bytes(_) => Err(Failure::unexpected_answer()),
    }
}
