//! The poll thread stops answering (a call into librdkafka that never returns, simulated here by
//! freezing that one thread with ptrace while the rest of the process runs on): the watchdog on
//! the async runtime stops aurore with exit code 1 and says why, within
//! `--group-liveness-timeout` + 10 s; a restarted aurore goes on, exactly once.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::{Env, events, fast_group};

/// Freezes one thread of another process (`PTRACE_SEIZE` + `PTRACE_INTERRUPT` stop that thread
/// alone, unlike a signal, which stops them all) until the returned sender is dropped or the
/// thread exits. The tracer is a thread of its own: a ptrace tie belongs to the tracing thread.
fn freeze_thread(tid: i32) -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (ready, is_ready) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on a thread id; no memory is shared with the tracee.
        unsafe {
            let seized = libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) == 0;
            let stopped = seized && libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) == 0;
            ready.send(stopped.then_some(()).ok_or_else(std::io::Error::last_os_error)).unwrap();
            if !stopped {
                return;
            }
            loop {
                // Reap the thread's own events (a traced thread that exits waits for its tracer).
                let mut status = 0;
                let r = libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG);
                if r == tid && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status)) || r < 0 {
                    return;
                }
                if let Err(mpsc::RecvTimeoutError::Disconnected) = released.recv_timeout(Duration::from_millis(50)) {
                    libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
                    return;
                }
            }
        }
    });
    is_ready.recv().unwrap().unwrap_or_else(|e| panic!("freezing thread {tid} with ptrace: {e}"));
    release
}

/// The thread id of aurore's poll thread (named `kafka-poll`).
fn poll_thread(pid: u32) -> i32 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        if std::fs::read_to_string(task.join("comm")).unwrap_or_default().trim() == "kafka-poll" {
            return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("aurore ({pid}) has no kafka-poll thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_poll_thread_stops_aurore_and_a_restart_goes_on_exactly_once() {
    let env = Env::new("poll_stall", 2, &[]).await;
    let mut args = vec!["--group-liveness-timeout", "10s"];
    args.extend(fast_group("classic"));
    let mut aurore = env.spawn_aurore(&args);
    env.produce(&env.producer(&[]), events(2_000, 2)).await;
    env.wait_persisted(2_000, Duration::from_secs(60)).await;

    let frozen = freeze_thread(poll_thread(aurore.pid()));
    let at = Instant::now();
    env.produce(&env.producer(&[]), events(2_000, 2)).await;
    // The bound is 10 s + 10 s; the watchdog looks once a second.
    let code = aurore.wait_exit(Duration::from_secs(60)).await;
    let took = at.elapsed();
    drop(frozen);
    assert_eq!(code, Some(1), "log: {}", aurore.log.display());
    assert!(took >= Duration::from_secs(20), "stopped after {took:?}, before its bound");
    let log = aurore.log_text();
    assert!(
        log.contains("the Kafka poll thread has not come back for") && log.contains("nothing is lost"),
        "log: {}",
        aurore.log.display()
    );
    eprintln!("[poll_stall] stopped {} ms after the poll thread froze", took.as_millis());

    let restarted = env.spawn_aurore(&args);
    env.wait_persisted(4_000, Duration::from_secs(120)).await;
    assert_eq!(env.assert_exactly_once().await, (4_000, 0));
    restarted.signal("TERM");
}
