//! What receivers see: RFC 5322 structure, list headers, identifiers.

use mail_parser::MimeHeaders;

use crate::{
    both_backends,
    helpers::{Backend, header, parse, spawn_app},
};

both_backends!(messages_are_well_formed_multipart_with_list_headers);

/// Every line ends in CRLF and none is longer than 998 octets.
pub fn assert_wire_format(bytes: &[u8]) {
    for (i, w) in bytes.windows(2).enumerate() {
        if w[1] == b'\n' {
            assert_eq!(w[0], b'\r', "bare LF at byte {i}");
        }
    }
    for line in bytes.split(|b| *b == b'\n') {
        assert!(line.len() <= 1000, "line longer than 998 octets");
    }
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    assert!(bytes[..end].is_ascii(), "8-bit bytes in the header");
}

async fn messages_are_well_formed_multipart_with_list_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("fmt@example.org").await;
    let msgs = app.sink.to("fmt@example.org");
    assert_eq!(msgs.len(), 2);
    let list_id = &app.settings.list.id;
    for m in &msgs {
        assert_wire_format(&m.bytes);
        let msg = parse(&m.bytes);
        assert!(msg.date().is_some(), "Date");
        let id = msg.message_id().expect("Message-ID");
        assert!(
            id.ends_with(&format!("@{list_id}")),
            "Message-ID {id} on the List-Id domain"
        );
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("trainings@harborlist.example.org")
        );
        assert_eq!(
            msg.reply_to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("streetworks@harborlist.example.org")
        );
        let ct = msg.root_part().content_type().expect("content type");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        assert_eq!(msg.text_body_count(), 1);
        assert_eq!(msg.html_body_count(), 1);
        assert!(header(&m.bytes, "MIME-Version").is_some());
        assert_eq!(
            m.from, "trainings@harborlist.example.org",
            "envelope sender"
        );
    }
    let welcome = &msgs[1].bytes;
    assert_eq!(
        header(welcome, "List-Id").as_deref(),
        Some(format!("\"Safe Harbor Trainings\" <{list_id}>").as_str())
    );
    let unsub = header(welcome, "List-Unsubscribe").unwrap();
    assert!(
        unsub.starts_with(&format!("<{}/unsubscribe/", app.address)) && unsub.ends_with('>'),
        "{unsub}"
    );
    assert_eq!(
        header(welcome, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    // The postal address (CAN-SPAM) is in the footer.
    assert!(crate::helpers::text_of(welcome).contains("1605 Eustis Street"));
}
