//! The Sieve differential corpus (tests/sieve/corpus): `tern sieve test` must print, for every
//! case, exactly the actions Pigeonhole's sieve-test was recorded taking (tests/sieve/README.md
//! has the format and the case layout). When Pigeonhole is installed, the recorded answers are
//! also checked against it, so a stale `.expected` cannot hide.

use crate::harness::TERN;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any single child process may run before it is killed and the case counted as failed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

const SIEVE_TEST: &str = "/usr/bin/sieve-test";

fn sieve_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sieve")
}

struct Case {
    name: String,
    script: PathBuf,
    message: PathBuf,
    expected: PathBuf,
    from: String,
    to: String,
}

/// Every `NAME.sieve` with a `NAME.eml` beside it, sorted by name. A `.sieve` without a message
/// is a script that cases `include`, not a case.
fn cases() -> Vec<Case> {
    let corpus = sieve_dir().join("corpus");
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("read {}: {e}", corpus.display()))
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            let stem = name.strip_suffix(".sieve")?.to_string();
            corpus.join(format!("{stem}.eml")).is_file().then_some(stem)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mut from = "sender@example.com".to_string();
            let mut to = "user@example.test".to_string();
            if let Ok(env) = std::fs::read_to_string(corpus.join(format!("{name}.env"))) {
                for line in env.lines() {
                    let line = line.trim_end_matches('\r');
                    if let Some(v) = line.strip_prefix("from=") {
                        from = v.to_string();
                    } else if let Some(v) = line.strip_prefix("to=") {
                        to = v.to_string();
                    }
                }
            }
            Case {
                script: corpus.join(format!("{name}.sieve")),
                message: corpus.join(format!("{name}.eml")),
                expected: corpus.join(format!("{name}.expected")),
                name,
                from,
                to,
            }
        })
        .collect()
}

struct Finished {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with stdin closed and its output captured, killing it after `CHILD_TIMEOUT`.
fn run_bounded(cmd: &mut Command) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers end once the pipes close; a grandchild holding them open must not
                // hang the test, so they are not joined here.
                return Err(format!(
                    "killed after {}s: {cmd:?}",
                    CHILD_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("wait for {cmd:?}: {e}")),
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    Ok(Finished {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    })
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)\n".to_string();
    }
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn corpus_matches_recorded_pigeonhole_answers() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} corpus cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(&case.expected)
            .unwrap_or_else(|e| panic!("{}: {e}", case.expected.display()));
        let run = run_bounded(
            Command::new(TERN)
                .args(["sieve", "test", "--from", &case.from, "--to", &case.to])
                .arg(&case.script)
                .arg(&case.message),
        );
        match run {
            Err(e) => mismatches.push(format!("{}: {e}\n", case.name)),
            Ok(done) if !done.success => mismatches.push(format!(
                "{}: tern exited with {:?}\n  stdout:\n{}  stderr:\n{}",
                case.name,
                done.code,
                indent(&done.stdout),
                indent(&done.stderr)
            )),
            Ok(done) if done.stdout != expected => mismatches.push(format!(
                "{}:\n  expected (Pigeonhole):\n{}  got (tern):\n{}{}",
                case.name,
                indent(&expected),
                indent(&done.stdout),
                if done.stderr.is_empty() {
                    String::new()
                } else {
                    format!("  stderr:\n{}", indent(&done.stderr))
                }
            )),
            Ok(_) => {}
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} Sieve corpus cases differ from Pigeonhole's recorded answers:\n\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn recorded_answers_are_pigeonhole_s() {
    if !Path::new(SIEVE_TEST).exists() {
        eprintln!("note: {SIEVE_TEST} is not installed; recorded Sieve answers not re-checked");
        return;
    }
    let record = sieve_dir().join("record.sh");
    let mut failures = Vec::new();
    // One case per run, so each child is bounded on its own.
    for case in cases() {
        let run = run_bounded(
            Command::new("/bin/sh")
                .arg(&record)
                .arg("--check")
                .arg(&case.name),
        );
        match run {
            Err(e) => failures.push(format!("{}: {e}\n", case.name)),
            Ok(done) if !done.success => failures.push(format!(
                "{}: record.sh --check exited with {:?}\n{}",
                case.name,
                done.code,
                indent(&format!("{}{}", done.stdout, done.stderr))
            )),
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "Pigeonhole no longer gives the recorded answers (re-record with tests/sieve/record.sh \
         after checking the RFC):\n\n{}",
        failures.join("\n")
    );
}
