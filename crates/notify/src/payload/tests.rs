use serde_json::Value;

use super::*;

fn requested() -> Notification {
    Notification {
        kind: NotificationKind::Requested,
        approval_id: "ap_7Hq2".to_owned(),
        identity: "deploy-bot".to_owned(),
        method: "DELETE".to_owned(),
        target: "/orders/42".to_owned(),
        risk: 72,
        reasons: vec![
            "new_network: 10.0.0.0/24".to_owned(),
            "off_hours: 03:12 UTC".to_owned(),
        ],
        requested_at: "2026-05-01T11:50:00Z".to_owned(),
        expires_at: "2026-05-01T12:00:00Z".to_owned(),
        group: "ops".to_owned(),
        quorum: 2,
        decided_by: Vec::new(),
        link: "https://gate.example/approvals/ap_7Hq2".to_owned(),
    }
}

fn rendered(notification: &Notification) -> Value {
    serde_json::from_slice(&render(notification)).expect("render must produce JSON")
}

/// Collects every string in `text` and `blocks` except button URLs, which are not
/// mrkdwn.
fn display_strings(body: &Value) -> Vec<String> {
    fn walk(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
        match value {
            Value::String(text) if key != Some("url") => out.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|item| walk(item, None, out)),
            Value::Object(map) => map
                .iter()
                .for_each(|(key, item)| walk(item, Some(key), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&body["text"], None, &mut out);
    walk(&body["blocks"], None, &mut out);
    out
}

fn count_buttons(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(count_buttons).sum(),
        Value::Object(map) => {
            let own = usize::from(map.get("type") == Some(&Value::from("button")));
            own + map.values().map(count_buttons).sum::<usize>()
        }
        _ => 0,
    }
}

fn blocks_of_type<'a>(body: &'a Value, kind: &str) -> Vec<&'a Value> {
    body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|block| block["type"] == kind)
        .collect()
}

#[test]
fn requested_text_is_complete_summary() {
    let body = rendered(&requested());
    let text = body["text"].as_str().unwrap();
    assert_eq!(
        text,
        "Approval requested: `deploy-bot` wants to run `DELETE /orders/42`, risk 72/100.\n\
         Reasons: `new_network: 10.0.0.0/24`; `off_hours: 03:12 UTC`.\n\
         Group `ops` must give 2 approvals before 2026-05-01T12:00:00Z.\n\
         Approval `ap_7Hq2`. Review in stepgate: https://gate.example/approvals/ap_7Hq2"
    );
}

#[test]
fn requested_slack_blocks() {
    let body = rendered(&requested());
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[0]["text"]["text"], "Approval requested");

    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| {
            assert_eq!(field["type"], "mrkdwn");
            field["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        fields,
        [
            "*Identity*\n`deploy-bot`",
            "*Operation*\n`DELETE /orders/42`",
            "*Risk*\n72/100",
            "*Expires*\n2026-05-01T12:00:00Z",
            "*Group*\n`ops`, 2 approvals needed",
        ]
    );
    assert_eq!(
        blocks[2]["text"]["text"],
        "*Reasons*\n• `new_network: 10.0.0.0/24`\n• `off_hours: 03:12 UTC`"
    );
    assert_eq!(
        blocks[3]["elements"][0]["text"],
        "Approval `ap_7Hq2`, requested at 2026-05-01T11:50:00Z"
    );
}

#[test]
fn one_link_button_only() {
    let body = rendered(&requested());
    assert_eq!(count_buttons(&body), 1);
    let actions = blocks_of_type(&body, "actions");
    assert_eq!(actions.len(), 1);
    let elements = actions[0]["elements"].as_array().unwrap();
    assert_eq!(elements.len(), 1);
    let button = &elements[0];
    assert_eq!(button["type"], "button");
    assert_eq!(button["text"]["text"], "Review in stepgate");
    assert_eq!(button["url"], "https://gate.example/approvals/ap_7Hq2");
    // A button with `value` or `style: primary` would suggest an action in
    // Slack itself; this one only opens the page.
    assert!(button.get("value").is_none());
    assert!(button.get("style").is_none());
}

#[test]
fn structured_fields() {
    let body = rendered(&requested());
    let stepgate = &body["stepgate"];
    assert_eq!(stepgate["event"], "approval.requested");
    assert_eq!(stepgate["approval_id"], "ap_7Hq2");
    assert_eq!(stepgate["identity"], "deploy-bot");
    assert_eq!(stepgate["method"], "DELETE");
    assert_eq!(stepgate["target"], "/orders/42");
    assert_eq!(stepgate["risk"], 72);
    assert_eq!(
        stepgate["reasons"],
        serde_json::json!(["new_network: 10.0.0.0/24", "off_hours: 03:12 UTC"])
    );
    assert_eq!(stepgate["reasons_omitted"], 0);
    assert_eq!(stepgate["requested_at"], "2026-05-01T11:50:00Z");
    assert_eq!(stepgate["expires_at"], "2026-05-01T12:00:00Z");
    assert_eq!(stepgate["group"], "ops");
    assert_eq!(stepgate["quorum"], 2);
    assert_eq!(stepgate["decided_by"], serde_json::json!([]));
    assert_eq!(stepgate["decided_by_omitted"], 0);
    assert_eq!(stepgate["link"], "https://gate.example/approvals/ap_7Hq2");
}

#[test]
fn event_names_of_kinds() {
    let cases = [
        (NotificationKind::Requested, "approval.requested"),
        (NotificationKind::Approved, "approval.approved"),
        (NotificationKind::Denied, "approval.denied"),
        (NotificationKind::Expired, "approval.expired"),
    ];
    for (kind, name) in cases {
        assert_eq!(kind.as_str(), name);
        assert_eq!(serde_json::to_value(kind).unwrap(), name);
        let body = rendered(&Notification {
            kind,
            ..requested()
        });
        assert_eq!(body["stepgate"]["event"], name);
    }
}

#[test]
fn approved_names_deciders() {
    let notification = Notification {
        kind: NotificationKind::Approved,
        decided_by: vec!["alice".to_owned(), "bob".to_owned()],
        ..requested()
    };
    let body = rendered(&notification);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Request approved: `DELETE /orders/42` by `deploy-bot`, risk 72/100.\n"),
        "{text}"
    );
    assert!(
        text.contains("Approved by `alice`, `bob` of group `ops`."),
        "{text}"
    );
    assert_eq!(body["blocks"][0]["text"]["text"], "Request approved");
    let fields = body["blocks"][1]["fields"].as_array().unwrap();
    assert_eq!(
        fields.last().unwrap()["text"],
        "*Approved by*\n`alice`, `bob`"
    );
    assert_eq!(
        body["stepgate"]["decided_by"],
        serde_json::json!(["alice", "bob"])
    );
}

#[test]
fn denied_and_expired_texts() {
    let denied = rendered(&Notification {
        kind: NotificationKind::Denied,
        decided_by: vec!["carol".to_owned()],
        ..requested()
    });
    let text = denied["text"].as_str().unwrap();
    assert!(text.starts_with("Request denied: "), "{text}");
    assert!(text.contains("Denied by `carol` of group `ops`."), "{text}");
    assert_eq!(
        denied["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["text"],
        "*Denied by*\n`carol`"
    );

    let expired = rendered(&Notification {
        kind: NotificationKind::Expired,
        ..requested()
    });
    let text = expired["text"].as_str().unwrap();
    assert!(text.starts_with("Approval expired: "), "{text}");
    assert!(
        text.contains("Group `ops` gave no decision before 2026-05-01T12:00:00Z."),
        "{text}"
    );
    assert_eq!(expired["blocks"][1]["fields"].as_array().unwrap().len(), 5);
}

#[test]
fn crafted_path_cannot_inject_links() {
    let notification = Notification {
        target: "/orders/<https://evil.example|click>/@channel<!channel>&<@U123>".to_owned(),
        identity: "bot<!here>".to_owned(),
        reasons: vec!["user_agent: <https://evil.example|x>".to_owned()],
        decided_by: vec!["<!everyone>".to_owned()],
        kind: NotificationKind::Approved,
        ..requested()
    };
    let body = rendered(&notification);
    for text in display_strings(&body) {
        assert!(!text.contains('<'), "unescaped < in {text:?}");
        assert!(!text.contains('>'), "unescaped > in {text:?}");
    }
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains(
            "`DELETE /orders/&lt;https://evil.example|click&gt;/@channel&lt;!channel&gt;&amp;&lt;@U123&gt;`"
        ),
        "{text}"
    );
    assert!(text.contains("`bot&lt;!here&gt;`"), "{text}");
    // Machine receivers get the value as it was.
    assert_eq!(
        body["stepgate"]["target"],
        "/orders/<https://evil.example|click>/@channel<!channel>&<@U123>"
    );
}

#[test]
fn backtick_cannot_close_code_span() {
    let notification = Notification {
        identity: "bot` [click](https://evil.example) `".to_owned(),
        ..requested()
    };
    let body = rendered(&notification);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("`botˋ [click](https://evil.example) ˋ`"),
        "{text}"
    );
    assert_eq!(
        body["stepgate"]["identity"],
        "bot` [click](https://evil.example) `"
    );
}

#[test]
fn control_characters_become_spaces() {
    let notification = Notification {
        identity: "bot\nApproval approved\u{202E}".to_owned(),
        ..requested()
    };
    let body = rendered(&notification);
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("`bot Approval approved `"), "{text}");
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn empty_values_and_lists() {
    let notification = Notification {
        identity: String::new(),
        reasons: Vec::new(),
        quorum: 1,
        ..requested()
    };
    let body = rendered(&notification);
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("(empty) wants to run"), "{text}");
    assert!(text.contains("Reasons: none listed."), "{text}");
    assert!(text.contains("must give 1 approval before"), "{text}");
    assert_eq!(body["blocks"][2]["text"]["text"], "*Reasons*\nnone listed");
}

#[test]
fn reasons_capped() {
    let notification = Notification {
        reasons: (0..50)
            .map(|i| format!("signal_{i}: {}", "x".repeat(1000)))
            .collect(),
        ..requested()
    };
    let body = rendered(&notification);
    let reasons = body["stepgate"]["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), MAX_REASONS);
    for reason in reasons {
        let reason = reason.as_str().unwrap();
        assert_eq!(reason.chars().count(), MAX_VALUE_CHARS);
        assert!(reason.ends_with('…'));
    }
    assert_eq!(body["stepgate"]["reasons_omitted"], 40);
    let section = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(section.chars().count() <= 3000, "{}", section.len());
    assert!(section.ends_with("more"), "{section}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("and 47 more."), "{text}");
}

#[test]
fn long_link_left_out() {
    let notification = Notification {
        link: format!("https://gate.example/{}", "a".repeat(MAX_LINK_CHARS)),
        ..requested()
    };
    let body = rendered(&notification);
    assert_eq!(count_buttons(&body), 0);
    assert!(blocks_of_type(&body, "actions").is_empty());
    assert_eq!(body["stepgate"]["link"], "");
    let text = body["text"].as_str().unwrap();
    assert!(text.ends_with("Approval `ap_7Hq2`."), "{text}");
}

#[test]
fn body_stays_within_bound() {
    // `&` grows fivefold in mrkdwn, and U+0001 sixfold in JSON (`\u0001`),
    // so these values give the largest body.
    let long = |c: char| c.to_string().repeat(10_000);
    let notification = Notification {
        kind: NotificationKind::Approved,
        approval_id: long('\u{1}'),
        identity: long('&'),
        method: long('&'),
        target: long('&'),
        risk: 100,
        reasons: (0..100).map(|_| long('&')).collect(),
        requested_at: long('\u{1}'),
        expires_at: long('&'),
        group: long('&'),
        quorum: u32::MAX,
        decided_by: (0..100).map(|_| long('\u{1}')).collect(),
        link: "h".repeat(MAX_LINK_CHARS),
    };
    let bytes = render(&notification);
    assert!(bytes.len() < 48 * 1024, "{} bytes", bytes.len());
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    for field in body["blocks"][1]["fields"].as_array().unwrap() {
        let text = field["text"].as_str().unwrap();
        assert!(text.chars().count() <= 2000, "{}", text.chars().count());
    }
    let reasons = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(reasons.chars().count() <= 3000);
}

#[test]
fn cap_keeps_short_values() {
    assert_eq!(cap("abc", 3), "abc");
    assert_eq!(cap("abcd", 3), "ab…");
    assert_eq!(cap("ééééé", 4), "ééé…");
}

#[test]
fn join_within_budget() {
    let items = || ["aa", "bb", "cc"].into_iter().map(str::to_owned);
    assert_eq!(join_within(items(), 3, ", ", 100), "aa, bb, cc");
    assert_eq!(join_within(items(), 3, ", ", 6), "aa, bb, and 1 more");
    assert_eq!(join_within(items(), 5, ", ", 100), "aa, bb, cc, and 2 more");
    // The first item is kept even when it alone exceeds the budget.
    assert_eq!(join_within(items(), 3, ", ", 1), "aa, and 2 more");
}
