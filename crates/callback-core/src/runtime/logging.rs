//! Log lines pass through redaction on their way out (SPEC 4.6, 6): whatever a log statement
//! carries (an id that is a card number, an error text quoting a body), what reaches stdout and
//! CloudWatch has card numbers masked and CVVs and secrets removed. The flows redact what they
//! log already; this is the net under them.

use std::io::{self, Write};

use lambda_runtime::tracing::subscriber::fmt::MakeWriter;

use crate::domain::redact::redact_text;

/// Writes each formatted log event to stdout, redacted.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingStdout;

/// One event's writer: the formatter writes an event in one go, redacted here as a whole.
pub struct RedactedLine;

impl Write for RedactedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stdout()
            .lock()
            .write_all(redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

impl<'a> MakeWriter<'a> for RedactingStdout {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine
    }
}

/// The Lambda runtime's default subscriber (level and JSON format from Lambda's logging
/// controls), writing through [`RedactingStdout`].
pub fn init_redacting_subscriber() {
    lambda_runtime::tracing::init_default_subscriber_with_writer(RedactingStdout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_written_whole_and_redacted() {
        // The writer reports the bytes it was given, whatever redaction made of them.
        let line = b"order 4111 1111 1111 1111 cvv 987 skey_live_x\n";
        assert_eq!(RedactedLine.write(line).unwrap(), line.len());
        assert_eq!(
            redact_text(std::str::from_utf8(line).unwrap()),
            "order 411111******1111 cvv [REDACTED] skey_[REDACTED]\n"
        );
    }
}
