//! Real-library interop peers: Python scripts in `host-tests/peers/` run on the virtualenv that
//! `../shared/reference/peer-setup/setup_venv.sh` builds (cs.packetstream 20240630 and the other
//! seed libraries at pinned versions).
//!
//! The venv is `$RIVULET_PEERS_VENV` if set, else `<workspace>/target/peers-venv`, built there on
//! first use (PyPI access needed, 1-2 minutes). A peer that cannot run is a test failure, never a
//! skip. Every peer binds or connects on 127.0.0.1 only and exits by itself after its own hard
//! timeout; [`PeerProcess`] also kills it when dropped.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The environment variable naming a prebuilt peers virtualenv.
pub const VENV_ENV: &str = "RIVULET_PEERS_VENV";

/// How long [`PeerProcess::read_listening_port`] waits for the `listening <port>` line.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host-tests lives inside the workspace").to_path_buf()
}

fn setup_script() -> PathBuf {
    // `../shared` beside the workspace
    workspace_root().parent().unwrap_or(Path::new("/")).join("shared/reference/peer-setup/setup_venv.sh")
}

fn build_hint(dir: &Path) -> String {
    format!(
        "build it with `bash {} {}` (needs python3 with venv and PyPI access), or unset {VENV_ENV} to let the \
         tests build <workspace>/target/peers-venv themselves",
        setup_script().display(),
        dir.display()
    )
}

/// The venv's interpreter if it exists and `import cs.packetstream` works, else why not.
fn check_venv(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin/python");
    if !python.exists() {
        return Err(format!("{} does not exist", python.display()));
    }
    let out = Command::new(&python)
        .args(["-c", "import cs.packetstream"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "`{} -c 'import cs.packetstream'` failed ({}):\n{}{}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What the default venv was built from: the setup script and its pin files. A venv whose marker
/// differs (or is missing) is rebuilt.
fn recipe() -> Result<String, String> {
    let dir = setup_script().parent().expect("the script is in a directory").to_path_buf();
    let mut recipe = String::new();
    for name in ["setup_venv.sh", "cs-pins.txt", "requirements-lock.txt"] {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                recipe.push_str(&format!("== {name}\n{text}\n"));
            }
            // only the script itself is indispensable
            Err(e) if name == "setup_venv.sh" => return Err(format!("cannot read {}: {e}", path.display())),
            Err(_) => {}
        }
    }
    Ok(recipe)
}

const MARKER: &str = ".rivulet-peers-recipe";

/// Builds `<workspace>/target/peers-venv` unless it is already built from the current recipe.
/// Holds an exclusive lock on `target/peers-venv.lock` so concurrent test binaries build it once.
fn ensure_default_venv() -> Result<PathBuf, String> {
    let target = workspace_root().join("target");
    let dir = target.join("peers-venv");
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join("peers-venv.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // `File::lock` is stable since Rust 1.89, above the workspace's declared MSRV (1.88); host-tests
    // only runs on the host with the stable toolchain of rust-toolchain.toml.
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let result = build_if_needed(&dir);
    drop(lock); // releases the lock
    result
}

fn build_if_needed(dir: &Path) -> Result<PathBuf, String> {
    let recipe = recipe()?;
    let marker = dir.join(MARKER);
    if fs::read_to_string(&marker).ok().as_deref() == Some(recipe.as_str())
        && let Ok(python) = check_venv(dir)
    {
        return Ok(python);
    }
    if dir.exists() {
        eprintln!("peers: {} is stale or incomplete; rebuilding it", dir.display());
        fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    let script = setup_script();
    eprintln!("peers: building {} with {} (1-2 minutes, needs PyPI)", dir.display(), script.display());
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `bash {}`: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`bash {} {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let python = check_venv(dir).map_err(|e| format!("the venv built by {} is not usable: {e}", script.display()))?;
    fs::write(&marker, &recipe).map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    eprintln!("peers: built {} in {:.0?}", dir.display(), started.elapsed());
    Ok(python)
}

/// The peers venv's `python`. Panics, saying how to fix it, when the venv is unusable or cannot
/// be built.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = PYTHON.get_or_init(|| match std::env::var_os(VENV_ENV) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            check_venv(&dir).map_err(|e| {
                format!("{VENV_ENV}={} is not a usable peers venv: {e}\n{}", dir.display(), build_hint(&dir))
            })
        }
        None => ensure_default_venv(),
    });
    match python {
        Ok(python) => python.clone(),
        Err(e) => panic!("peers venv unavailable: {e}"),
    }
}

/// `host-tests/peers/<name>`; panics if it does not exist.
pub fn peer_script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join(name);
    assert!(path.is_file(), "peer script {} does not exist", path.display());
    path
}

/// What a finished peer printed.
#[derive(Debug, Clone)]
pub struct PeerOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// The path of example `name`, built by `cargo test --workspace` into `<target>/<profile>/examples/`
/// (the test binary itself runs from `<target>/<profile>/deps/`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary sits in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} is missing: run the tests with `cargo test --workspace`, which builds the examples",
        path.display()
    );
    path
}

/// A running peer script. Its stdout and stderr are captured (and stdout's lines also offered to
/// [`PeerProcess::read_listening_port`]); it is killed when dropped.
pub struct PeerProcess {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl PeerProcess {
    /// Runs `python -u SCRIPT ARGS...` on the peers venv. `script` is a name in `host-tests/peers/`
    /// or a path.
    pub fn spawn(script: impl AsRef<Path>, args: &[&str]) -> PeerProcess {
        let script = script.as_ref();
        let script = if script.components().count() == 1 {
            peer_script(script.to_str().expect("a UTF-8 script name"))
        } else {
            script.to_path_buf()
        };
        let name = format!(
            "{} {}",
            script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            args.join(" ")
        );
        let mut command = Command::new(python());
        command.arg("-u").arg(&script).args(args).env("PYTHONDONTWRITEBYTECODE", "1");
        Self::spawn_command(name, command)
    }

    /// Runs one of our example binaries (built by `cargo test --workspace` beside the test
    /// binaries) with `args`.
    pub fn spawn_example(example: &str, args: &[&str]) -> PeerProcess {
        let program = example_binary(example);
        let name = format!("{example} {}", args.join(" "));
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn_command(name, command)
    }

    fn spawn_command(name: String, mut command: Command) -> PeerProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{name}`: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let out_pipe: ChildStdout = child.stdout.take().expect("stdout is piped");
        let err_pipe: ChildStderr = child.stderr.take().expect("stderr is piped");
        let out_buf = Arc::clone(&stdout);
        let err_buf = Arc::clone(&stderr);
        let readers = vec![
            thread::spawn(move || {
                let mut reader = BufReader::new(out_pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            out_buf.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&line);
                            let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                        }
                    }
                }
            }),
            thread::spawn(move || {
                let mut pipe = err_pipe;
                let mut chunk = [0u8; 4096];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => err_buf.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]),
                    }
                }
            }),
        ];
        PeerProcess { name, child, stdout, stderr, lines, readers }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn captured(&self) -> (String, String) {
        let out = String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        let err = String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        (out, err)
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // the pipes close with the process: the readers finish
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let (out, err) = self.captured();
        panic!(
            "peer `{}`: {why} (exit: {})\n--- stdout\n{out}\n--- stderr\n{err}",
            self.name,
            status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
        );
    }

    /// Waits up to [`LISTEN_TIMEOUT`] for the peer's `listening <port>` line on stdout and
    /// returns the port. Panics with the peer's output if it exits or stays silent.
    pub fn read_listening_port(&mut self) -> u16 {
        self.read_listening_port_within(LISTEN_TIMEOUT)
    }

    /// [`PeerProcess::read_listening_port`] with an explicit timeout.
    pub fn read_listening_port_within(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.strip_prefix("listening ") {
                        // `listening <port>` or `listening <host>:<port>`
                        let port = at.trim().rsplit(':').next().unwrap_or_default();
                        match port.parse() {
                            Ok(port) => return port,
                            Err(_) => self.fail(&format!("bad listening line {line:?}")),
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("no `listening <port>` line within {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => self.fail("stdout closed before a `listening <port>` line"),
            }
        }
    }

    /// Waits up to `timeout` for the peer to exit and returns what it printed, whatever its exit
    /// status. Panics with the output so far (after killing it) if it is still running.
    pub fn wait(mut self, timeout: Duration) -> PeerOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => self.fail(&format!("still running after {timeout:?}")),
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => self.fail(&format!("cannot wait for it: {e}")),
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let (stdout, stderr) = self.captured();
        PeerOutput { status, stdout, stderr }
    }

    /// [`PeerProcess::wait`], and panics with the peer's output unless it exited with status 0.
    pub fn wait_success(self, timeout: Duration) -> PeerOutput {
        let name = self.name.clone();
        let out = self.wait(timeout);
        if !out.status.success() {
            panic!("peer `{name}` failed ({})\n--- stdout\n{}\n--- stderr\n{}", out.status, out.stdout, out.stderr);
        }
        out
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `script` (a golden-vector generator in `host-tests/peers/`, no arguments) on the peers
/// venv and fails unless it prints exactly `committed` (a path from the workspace root), naming
/// the first differing lines and how to regenerate.
pub fn assert_prints_committed(script: &str, committed: &str) {
    let out = PeerProcess::spawn(script, &[]).wait_success(Duration::from_secs(60));
    let path = workspace_root().join(committed);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let differing: Vec<(&str, &str)> =
        text.lines().zip(out.stdout.lines()).filter(|(ours, theirs)| ours != theirs).take(5).collect();
    assert!(
        text == out.stdout,
        "{} is not what {script} prints now ({} lines committed, {} printed); first differences: \
         {differing:#?}\nregenerate it as the script says: $RIVULET_PEERS_VENV/bin/python host-tests/peers/{script} > {committed}",
        path.display(),
        text.lines().count(),
        out.stdout.lines().count(),
    );
}
