//! The interpreter on the RFCs' own examples.

use super::*;
use std::sync::Arc;

struct Env {
    folders: Vec<&'static str>,
    seen: Vec<String>,
    includes: Vec<(&'static str, &'static str)>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            folders: vec!["INBOX", "Junk", "Lists"],
            seen: Vec::new(),
            includes: Vec::new(),
        }
    }
}

impl Environment for Env {
    fn mailbox_exists(&self, name: &str) -> bool {
        self.folders.iter().any(|f| f.eq_ignore_ascii_case(name))
    }
    fn special_use_exists(&self, _m: Option<&str>, uses: &[String]) -> bool {
        uses.iter().all(|u| u.eq_ignore_ascii_case("\\Junk"))
    }
    fn include(&self, _l: ast::Location, name: &str) -> Result<Option<Arc<Program>>, String> {
        match self.includes.iter().find(|(n, _)| *n == name) {
            Some((_, src)) => compile(src)
                .map(|p| Some(Arc::new(p)))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
    fn seen(&self, key: &str) -> bool {
        self.seen.iter().any(|k| k == key)
    }
    fn spam_score(&self, _percent: bool) -> Option<String> {
        Some("8".into())
    }
    fn virus_score(&self) -> Option<String> {
        None
    }
    fn now(&self) -> i64 {
        1_796_112_000
    }
}

const MSG: &str = "Date: Tue, 1 Dec 2026 09:05:07 +0100\r\n\
From: Coyote <coyote@desert.example.org>\r\n\
To: roadrunner+lists@acme.example.com, other@example.net\r\n\
Subject: =?utf-8?q?I_have_a_present_for_you_=E2=98=BA?=\r\n\
List-Id: acme users <acme-users.lists.example.com>\r\n\
Message-ID: <1@desert.example.org>\r\n\
X-Spam: yes\r\n\
Content-Type: text/plain\r\n\
\r\n\
Look, I'm sorry about the whole anvil thing.\r\n";

fn run_with(src: &str, msg: &str, env: &Env) -> Outcome {
    let program = compile(src).unwrap_or_else(|e| panic!("{src}\n{e}"));
    let envelope = Envelope {
        from: "coyote@desert.example.org".into(),
        to: "roadrunner+lists@acme.example.com".into(),
    };
    interp::run(
        &[&program],
        msg.as_bytes(),
        &envelope,
        &["roadrunner@acme.example.com".to_string()],
        env,
        &Limits::default(),
    )
}

fn lines(src: &str) -> Vec<String> {
    normalized(&run_with(src, MSG, &Env::default()))
}

#[test]
fn compile_errors_name_line_and_column() {
    let e = compile("require \"fileinto\";\n\nif true {\n  if headr \"x\" \"y\" { stop; }\n}\n")
        .unwrap_err();
    assert_eq!(e.to_string(), "line 4, column 6: unknown test \"headr\"");
    let e = compile("fileinto \"x\";").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1, column 1: command \"fileinto\" needs require \"fileinto\""
    );
    let e = compile("require \"frobnicate\";").unwrap_err();
    assert!(
        e.to_string()
            .contains("unsupported extension \"frobnicate\""),
        "{e}"
    );
    assert!(compile("keep").is_err());
    assert!(compile("if true { keep; ").is_err());
    assert!(compile("keep; require \"fileinto\";").is_err());
    assert!(compile("\"unterminated").is_err());
    assert!(compile("if header :is :contains \"a\" \"b\" { keep; }").is_err());
    assert!(compile("elsif true { keep; }").is_err());
    let deep = "if true { ".repeat(100) + &"}".repeat(100);
    assert!(compile(&deep).is_err());
}

#[test]
fn implicit_keep_as_rfc_5228_says() {
    assert_eq!(lines(""), ["store INBOX"]);
    assert_eq!(lines("discard;"), Vec::<String>::new());
    assert_eq!(
        lines("require \"fileinto\"; fileinto \"Lists\";"),
        ["store Lists"]
    );
    assert_eq!(
        lines("require [\"fileinto\", \"copy\"]; fileinto :copy \"Lists\";"),
        ["store INBOX", "store Lists"]
    );
    assert_eq!(
        lines("redirect \"a@example.net\";"),
        ["redirect a@example.net"]
    );
    assert_eq!(lines("keep; discard;"), ["store INBOX"]);
    assert_eq!(
        lines("require \"fileinto\"; keep; fileinto \"INBOX\";"),
        ["store INBOX"]
    );
    assert_eq!(
        lines("require \"fileinto\"; fileinto \"Lists\"; fileinto \"Lists\";"),
        ["store Lists"]
    );
    assert_eq!(lines("stop; discard;"), ["store INBOX"]);
}

#[test]
fn header_address_envelope_and_size() {
    assert_eq!(
        lines("if header :contains \"subject\" \"present for you \u{263a}\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if address :domain :is \"from\" \"DESERT.example.org\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if address :localpart :is \"from\" \"coyote\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require \"envelope\"; if envelope :all :is \"from\" \"coyote@desert.example.org\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require [\"envelope\", \"subaddress\"]; if envelope :detail \"to\" \"lists\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("require \"subaddress\"; if address :user \"to\" \"roadrunner\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(lines("if size :over 100K { discard; }"), ["store INBOX"]);
    assert_eq!(
        lines("if size :under 1k { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if exists [\"list-id\", \"x-spam\"] { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if not exists \"x-nothing\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if allof (true, false) { discard; }"),
        ["store INBOX"]
    );
    assert_eq!(
        lines("if anyof (false, header :matches \"subject\" \"I have*\") { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("if header :comparator \"i;octet\" :contains \"subject\" \"i have\" { discard; }"),
        ["store INBOX"]
    );
}

#[test]
fn variables_and_match_variables_from_rfc_5229() {
    let src = "require [\"fileinto\", \"variables\"];\n\
        if header :matches \"List-ID\" \"*<*>\" { fileinto \"INBOX.lists.${2}\"; stop; }";
    assert_eq!(
        lines(src),
        ["store INBOX.lists.acme-users.lists.example.com"]
    );
    let src = "require [\"variables\", \"fileinto\"]; set \"a\" \"juMBlEd lETteRS\"; set :length \"b\" \"${a}\";\n\
        set :lower :upperfirst \"c\" \"${a}\"; fileinto \"${b}-${c}\";";
    assert_eq!(lines(src), ["store 15-Jumbled letters"]);
    let src = "require [\"variables\", \"fileinto\"]; set \"x\" \"Junk\"; if string :is \"${x}\" \"Junk\" { fileinto \"${x}\"; }";
    assert_eq!(lines(src), ["store Junk"]);
}

#[test]
fn relational_and_numeric() {
    let src = "require [\"relational\", \"comparator-i;ascii-numeric\"];\n\
        if header :count \"ge\" :comparator \"i;ascii-numeric\" \"to\" \"1\" { discard; }";
    assert_eq!(lines(src), Vec::<String>::new());
    let src = "require [\"relational\", \"comparator-i;ascii-numeric\"];\n\
        if address :count \"eq\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] \"2\" { discard; }";
    assert_eq!(lines(src), Vec::<String>::new());
    let src = "require \"relational\"; if header :value \"gt\" \"x-spam\" \"x\" { discard; }";
    assert_eq!(lines(src), Vec::<String>::new());
}

#[test]
fn imap4flags_land_on_the_stored_copy() {
    let src = "require [\"imap4flags\", \"fileinto\"]; addflag \"\\\\Flagged\"; addflag [\"$Work\", \"\\\\Seen\"];\n\
        removeflag \"\\\\Seen\"; fileinto \"Lists\"; keep :flags \"\\\\Answered\";";
    assert_eq!(
        lines(src),
        [
            "store INBOX flags=\\answered",
            "store Lists flags=$work,\\flagged"
        ]
    );
    let src = "require \"imap4flags\"; setflag \"a b\"; if hasflag :is \"b\" { addflag \"c\"; }";
    assert_eq!(lines(src), ["store INBOX flags=a,b,c"]);
}

#[test]
fn reject_vacation_and_limits() {
    assert_eq!(
        lines("require \"reject\"; reject \"no thanks\";"),
        ["reject"]
    );
    assert_eq!(lines("require \"ereject\"; ereject \"no\";"), ["ereject"]);
    // reject beside fileinto is an error: the message is kept.
    assert_eq!(
        lines("require [\"reject\", \"fileinto\"]; fileinto \"Lists\"; reject \"x\";"),
        ["error runtime", "store INBOX"]
    );
    // From a list: no vacation reply.
    assert_eq!(
        lines("require \"vacation\"; vacation \"away\";"),
        ["store INBOX"]
    );
    let plain = MSG.replace("List-Id: acme users <acme-users.lists.example.com>\r\n", "");
    let out = run_with(
        "require \"vacation\"; vacation :days 3 :subject \"Away\" \"away\";",
        &plain,
        &Env::default(),
    );
    assert_eq!(
        normalized(&out),
        ["store INBOX", "vacation seconds=259200 subject=Away"]
    );
    let Some(Action::Vacation(r)) = out
        .actions
        .iter()
        .find(|a| matches!(a, Action::Vacation(_)))
    else {
        panic!()
    };
    assert_eq!(r.to, "coyote@desert.example.org");
    assert_eq!(r.in_reply_to.as_deref(), Some("<1@desert.example.org>"));
    let many = (0..6)
        .map(|i| format!("redirect \"u{i}@example.net\";"))
        .collect::<String>();
    assert_eq!(lines(&many), ["error runtime", "store INBOX"]);
}

#[test]
fn include_return_and_loops() {
    let mut env = Env::default();
    env.includes.push(("spam", "require [\"fileinto\", \"include\"]; if header :is \"x-spam\" \"yes\" { fileinto \"Junk\"; return; } discard;"));
    env.includes
        .push(("self", "require \"include\"; include \"self\";"));
    let out = run_with("require \"include\"; include \"spam\"; keep;", MSG, &env);
    assert_eq!(normalized(&out), ["store INBOX", "store Junk"]);
    let out = run_with("require \"include\"; include \"self\";", MSG, &env);
    assert_eq!(normalized(&out), ["error runtime", "store INBOX"]);
    let out = run_with(
        "require \"include\"; include :optional \"none\";",
        MSG,
        &env,
    );
    assert_eq!(normalized(&out), ["store INBOX"]);
    let out = run_with("require \"include\"; include \"none\";", MSG, &env);
    assert_eq!(normalized(&out), ["error runtime", "store INBOX"]);
}

#[test]
fn body_date_index_editheader_regex_and_spamtest() {
    assert_eq!(
        lines("require \"body\"; if body :contains \"anvil\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("require \"body\"; if body :raw :contains \"whole anvil\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("require \"date\"; if date :originalzone \"date\" \"hour\" \"09\" { discard; }"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require \"date\"; if date :zone \"+0000\" \"date\" \"time\" \"08:05:07\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require [\"date\", \"index\"]; if date :index 1 :zone \"+0000\" \"date\" \"weekday\" \"2\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require \"editheader\"; addheader \"X-Seen\" \"1\"; if header :is \"x-seen\" \"1\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("require \"editheader\"; deleteheader \"x-spam\"; if exists \"x-spam\" { discard; }"),
        ["store INBOX"]
    );
    assert_eq!(
        lines(
            "require \"editheader\"; deleteheader \"received\"; addheader \"Received\" \"x\"; if exists \"received\" { discard; }"
        ),
        ["store INBOX"]
    );
    assert_eq!(
        lines(
            "require [\"regex\", \"variables\", \"fileinto\"]; if header :regex \"list-id\" \"<([a-z-]+)\\\\.\" { fileinto \"${1}\"; }"
        ),
        ["store acme-users"]
    );
    assert!(compile("require \"regex\"; if header :regex \"x\" \"(\" { stop; }").is_err());
    assert_eq!(
        lines(
            "require [\"spamtest\", \"relational\", \"comparator-i;ascii-numeric\"]; if spamtest :value \"ge\" :comparator \"i;ascii-numeric\" \"5\" { discard; }"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(
            "require [\"mailbox\", \"fileinto\"]; if mailboxexists \"Lists\" { fileinto :create \"New\"; }"
        ),
        ["store New"]
    );
    assert_eq!(
        lines("require [\"encoded-character\", \"fileinto\"]; fileinto \"${hex:4C 69 73 74 73}\";"),
        ["store Lists"]
    );
}

#[test]
fn duplicate_is_remembered_by_key() {
    let src = "require \"duplicate\"; if duplicate { discard; }";
    let out = run_with(src, MSG, &Env::default());
    assert_eq!(normalized(&out), ["store INBOX"]);
    assert_eq!(out.duplicates.len(), 1);
    let env = Env {
        seen: vec![out.duplicates[0].0.clone()],
        ..Env::default()
    };
    assert_eq!(normalized(&run_with(src, MSG, &env)), Vec::<String>::new());
}

#[test]
fn multiline_strings_and_comments() {
    let src = "require \"reject\"; # a comment\n/* and\n another */ reject text:\nline one\n..dot\n.\n;\n";
    let out = run_with(src, MSG, &Env::default());
    let Action::Reject { reason, .. } = &out.actions[0] else {
        panic!("{out:?}")
    };
    assert_eq!(reason, "line one\r\n.dot\r\n");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "require",
        "if",
        "elsif",
        "else",
        "stop",
        "keep",
        "discard",
        "fileinto",
        "redirect",
        "reject",
        "vacation",
        "set",
        "addflag",
        "setflag",
        "removeflag",
        "include",
        "return",
        "global",
        "addheader",
        "deleteheader",
        "header",
        "address",
        "envelope",
        "exists",
        "size",
        "allof",
        "anyof",
        "not",
        "true",
        "false",
        "body",
        "date",
        "currentdate",
        "string",
        "hasflag",
        "duplicate",
        "mailboxexists",
        ":is",
        ":contains",
        ":matches",
        ":regex",
        ":value",
        ":count",
        ":comparator",
        ":over",
        ":under",
        ":all",
        ":localpart",
        ":domain",
        ":user",
        ":detail",
        ":index",
        ":last",
        ":copy",
        ":create",
        ":flags",
        ":days",
        ":seconds",
        ":subject",
        ":from",
        ":text",
        ":raw",
        ":content",
        ":zone",
        ":lower",
        ":upper",
        ":length",
        "\"fileinto\"",
        "\"variables\"",
        "\"imap4flags\"",
        "\"regex\"",
        "\"relational\"",
        "\"include\"",
        "\"vacation\"",
        "\"editheader\"",
        "\"body\"",
        "\"date\"",
        "\"index\"",
        "\"subject\"",
        "\"from\"",
        "\"to\"",
        "\"*a*\"",
        "\"${1}\"",
        "\"${x}\"",
        "\"ge\"",
        "\"i;ascii-numeric\"",
        "\"\\\\Seen\"",
        "\"a@b.example\"",
        "\"(\"",
        "\"[a-z]+\"",
        "\"Lists\"",
        "1",
        "100K",
        ";",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ",",
        "text:\n.\n",
    ];

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(WORDS), 0..60).prop_map(|w| w.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_text_compiles_or_errs_without_panic(src in "\\PC{0,200}") {
            let _ = compile(&src);
        }

        #[test]
        fn token_soup_that_compiles_runs_within_its_limits(src in soup()) {
            let mut env = Env::default();
            env.includes.push(("a", "require \"include\"; include \"a\";"));
            if let Ok(p) = compile(&src) {
                let envelope = Envelope { from: "a@b.example".into(), to: "c+d@e.example".into() };
                let out = interp::run(&[&p], MSG.as_bytes(), &envelope, &[], &env, &Limits::default());
                // Never lost: something is stored, or the script chose not to (discard, reject, redirect).
                if out.error.is_some() {
                    prop_assert_eq!(normalized(&out), vec!["error runtime".to_string(), "store INBOX".to_string()]);
                }
                prop_assert!(out.actions.len() <= Limits::default().max_actions + 1);
            }
        }

        #[test]
        fn any_message_runs_through_a_script_of_every_test(msg in prop::collection::vec(any::<u8>(), 0..2000)) {
            let src = "require [\"body\", \"date\", \"index\", \"variables\", \"relational\", \"editheader\", \"regex\"];\n\
                if anyof (header :matches \"subject\" \"*?*\", address :domain \"from\" \"x\", exists \"to\",\n\
                  body :text :contains \"x\", body :raw :regex \"a+b\", date :zone \"+0100\" \"date\" \"year\" \"2026\",\n\
                  header :count \"gt\" \"received\" \"1\", size :over 1) { addheader \"X-A\" \"${1}\"; deleteheader :index 1 \"subject\"; }";
            let p = compile(src).unwrap();
            let envelope = Envelope::default();
            let out = interp::run(&[&p], &msg, &envelope, &[], &Env::default(), &Limits::default());
            prop_assert!(!out.actions.is_empty());
        }
    }
}
