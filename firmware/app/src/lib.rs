//! The Rivulet device application, written once for every place it runs: the Nucleo-F767ZI
//! firmware (`firmware/nucleo`, TCP over Ethernet), the QEMU mps2-an386 firmware
//! (`firmware/qemu`, a UART) and the host simulation on embassy-net. `no_std`, no allocation.
//!
//! What the board does differs and comes through the small [`Board`] trait (die temperature,
//! LED, uptime, firmware version); everything that reaches the gateway goes through a
//! [`rivulet_embassy::Device`], whose runner keeps the link up, reconnects and resumes the
//! session across gateway restarts. [`run`] is the whole application:
//!
//! | what | event type (`<name>` is the device name) | payload (JSON) |
//! |---|---|---|
//! | die temperature, every period | `device/<name>/telemetry/temperature` | °C, `23.45`; not sent by a board without a sensor |
//! | uptime, every period | `device/<name>/telemetry/uptime` | milliseconds since boot, `61000` |
//! | counters, every period | `device/<name>/telemetry/counters` | `{"telemetry":..,"dropped":..,"commands":..,"rejected":..,"requests":..,"links":..,"connect_failures":..,"bad_frames":..}` |
//! | the LED, at start and after each `led` command | `device/<name>/state/led` | `true` / `false` |
//! | command: the LED | `command/<name>/led` (subscribed) | `true` / `false` |
//! | command: the telemetry period | `command/<name>/period` (subscribed) | milliseconds, 100 to 3 600 000 |
//! | request [`RQ_INFO`] (1) | `rivulet request <name> 1` | JSON: version, board, uptime, LED, period, stack used, links, counters |
//! | file requests (`rivulet send-file IMAGE --to <name>`) | to [`run`]'s [`Images`] (a flash partition, or refused) | hash-checked; [`Board::image`] hears of it |
//!
//! The period starts at one second. Telemetry is dropped, not queued without end, while the
//! outbox is full (the gateway unreachable for a few seconds): `dropped` counts it, and the
//! next reading is as good as the lost one. Commands with a payload the device does not
//! understand are counted in `rejected` and logged.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

#[macro_use]
mod fmt;

pub mod config;
mod json;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod stack;

use core::convert::Infallible;

use embassy_futures::select::{Either4, select4};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Instant, Ticker};
use embedded_storage_async::nor_flash::NorFlash;
use rivulet_core::files::{Answer, FileRequest};
use rivulet_core::model::{EventPayload, EventPayloadRef, EventType};
use rivulet_embassy::ota::ImageReceiver;
use rivulet_embassy::{ANSWER_BYTES, Device, Event, LinkStatus, PAYLOAD_BYTES, Request, StatusWatcher};

/// The `info` request type: `rivulet request <name> 1` answers with the device's state as JSON.
pub const RQ_INFO: u64 = 1;

/// The telemetry period at start.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// The shortest and longest telemetry period a `period` command may set, in milliseconds.
pub const PERIOD_MS: core::ops::RangeInclusive<u32> = 100..=3_600_000;

/// The longest [`Board::NAME`] and [`Board::FIRMWARE_VERSION`], so that `info` fits one answer
/// ([`ANSWER_BYTES`]); checked while compiling.
pub const BOARD_TEXT_MAX: usize = 16;

/// What differs between the boards the application runs on.
pub trait Board {
    /// The board as `info` reports it (`"nucleo-f767zi"`); at most [`BOARD_TEXT_MAX`] bytes.
    const NAME: &'static str;
    /// The firmware's version (the binary's `env!("CARGO_PKG_VERSION")`); at most
    /// [`BOARD_TEXT_MAX`] bytes.
    const FIRMWARE_VERSION: &'static str;

    /// The die temperature in hundredths of a degree Celsius (`2345` is 23.45 °C), or `None` on
    /// a board without a sensor, whose telemetry then has no temperature.
    fn die_temperature(&mut self) -> Option<i32>;

    /// Turns the user LED on or off.
    fn set_led(&mut self, on: bool);

    /// Called when the link to the gateway comes up or goes down (`status.connected`), so a board
    /// can show it (a second LED, a console line).
    fn link_changed(&mut self, status: &LinkStatus) {
        let _ = status;
    }

    /// Time since boot; embassy-time's clock unless the board knows better.
    fn uptime(&self) -> Duration {
        Duration::from_ticks(Instant::now().as_ticks())
    }

    /// The most stack the firmware has used so far, in bytes, on boards that measure it.
    fn stack_used(&self) -> Option<u32> {
        None
    }

    /// What the image receiver did: a board shows it, and stages a verified image (marks it for
    /// its bootloader).
    fn image(&mut self, event: ImageEvent<'_>) {
        let _ = event;
    }
}

/// What happened to an image, for [`Board::image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageEvent<'a> {
    /// An image was offered and is being received from its byte `held` on.
    Receiving { name: &'a str, size: u64, held: u64 },
    /// `held` of the image's bytes are written (after each chunk).
    Progress { held: u64, size: u64 },
    /// The whole image is in flash, its SHA-256 the offered one, checked on what the flash holds.
    Verified { name: &'a str, size: u64, sha256: &'a rivulet_core::files::Digest },
    /// A file request was refused with this reason.
    Refused(&'a str),
}

/// Where [`run`] sends file and firmware-image requests (`rivulet send-file IMAGE --to <name>`):
/// [`NoImages`] refuses them, a `rivulet_embassy::ota::ImageReceiver` writes them to its flash.
/// Chosen by type, so a board without images carries none of the receiver's code (SHA-256,
/// postcard bodies: about 15 KB of flash).
#[allow(async_fn_in_trait)]
pub trait Images {
    /// Answers a file request through `device`, and tells `board` what came of it.
    async fn answer<M: RawMutex, B: Board>(&mut self, device: &Device<'_, M>, board: &mut B, request: &Request);
}

/// A board that takes no files: their requests are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoImages;

impl Images for NoImages {
    async fn answer<M: RawMutex, B: Board>(&mut self, device: &Device<'_, M>, board: &mut B, request: &Request) {
        let reason = "this device takes no files";
        if let Err(error) = device.refuse(request.from, reason).await {
            debug!("file request {} not answered: {}", request.rq_type, error);
        }
        board.image(ImageEvent::Refused(reason));
    }
}

impl<F: NorFlash> Images for ImageReceiver<F> {
    async fn answer<M: RawMutex, B: Board>(&mut self, device: &Device<'_, M>, board: &mut B, request: &Request) {
        let answer = self.serve(device, request).await;
        // What came of it, for the board (after the answer: a slow board does not hold it up).
        let size = self.transfer().map_or(0, |t| t.size());
        match (answer, FileRequest::parse(request.rq_type, &request.payload)) {
            (Ok(Answer::Ready { held, .. }), Ok(Some(FileRequest::Offer(offer)))) => {
                board.image(ImageEvent::Receiving { name: offer.name, size: offer.size, held })
            }
            (Ok(Answer::Held(held)), _) => board.image(ImageEvent::Progress { held, size }),
            (Ok(Answer::Complete(sha256)), Ok(Some(FileRequest::Done(done)))) => {
                board.image(ImageEvent::Verified { name: done.name, size, sha256: &sha256 })
            }
            (Err(e), _) => board.image(ImageEvent::Refused(e.reason())),
            _ => {}
        }
    }
}

/// What the application counted since boot; reported in the `counters` telemetry and `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Telemetry and state events queued for registration.
    pub telemetry: u32,
    /// Telemetry and state events dropped: the outbox was full.
    pub dropped: u32,
    /// Command events received.
    pub commands: u32,
    /// Command events not understood (unknown command, bad payload).
    pub rejected: u32,
    /// Requests of the gateway received (answered or refused).
    pub requests: u32,
}

/// Why [`run`] could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetupError {
    /// The device name is not one event-type segment of at most [`config::NAME_MAX`] bytes
    /// (see [`config::is_valid_name`]).
    InvalidName,
    /// The subscription to the device's commands was refused by the handle.
    Subscribe(rivulet_embassy::Error),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::InvalidName => f.write_str("invalid device name"),
            SetupError::Subscribe(e) => write!(f, "cannot subscribe to the commands: {e}"),
        }
    }
}

/// The event types of one device, built once from its name.
struct Types {
    temperature: EventType,
    uptime: EventType,
    counters: EventType,
    led: EventType,
    commands: EventType,
}

impl Types {
    fn new(name: &str) -> Result<Types, SetupError> {
        if !config::is_valid_name(name) {
            return Err(SetupError::InvalidName);
        }
        let build =
            |segments: &[&str]| EventType::from_segments(segments.iter().copied()).map_err(|_| SetupError::InvalidName);
        Ok(Types {
            temperature: build(&["device", name, "telemetry", "temperature"])?,
            uptime: build(&["device", name, "telemetry", "uptime"])?,
            counters: build(&["device", name, "telemetry", "counters"])?,
            led: build(&["device", name, "state", "led"])?,
            commands: build(&["command", name, "*"])?,
        })
    }
}

/// Runs the application for ever on `device` (whose runner must be running) and `board`, as the
/// device `name` (the client name the runner was given), file requests going to `images`.
/// Returns only if it cannot start.
pub async fn run<B: Board, M: RawMutex, I: Images>(
    device: &Device<'_, M>,
    board: &mut B,
    images: &mut I,
    name: &str,
) -> Result<Infallible, SetupError> {
    const {
        assert!(
            B::NAME.len() <= BOARD_TEXT_MAX && B::FIRMWARE_VERSION.len() <= BOARD_TEXT_MAX,
            "Board::NAME and Board::FIRMWARE_VERSION: at most BOARD_TEXT_MAX bytes each"
        )
    };
    let types = Types::new(name)?;
    // Kept by the runner and sent again with every init: commands reach us after any reconnect.
    device.subscribe(&types.commands).await.map_err(SetupError::Subscribe)?;
    let mut app =
        App { device, board, images, types, led: false, period: DEFAULT_PERIOD, counters: Counters::default() };
    app.board.set_led(false);
    app.report_led().await;
    info!(
        "device {}: telemetry every {} ms under device/{}/telemetry, commands from command/{}/*",
        name,
        app.period.as_millis(),
        name,
        name
    );
    let mut watcher = device.status_watcher();
    let mut connected = false;
    let mut ticker = Ticker::every(app.period);
    loop {
        // Each branch is cancel-safe: a tick, an event or a request is taken only by the branch
        // that completes.
        match select4(ticker.next(), device.next_event(), device.next_request(), link_change(&mut watcher, connected))
            .await
        {
            Either4::First(()) => app.telemetry().await,
            Either4::Second(event) => {
                if app.command(&event).await {
                    ticker = Ticker::every(app.period);
                }
            }
            Either4::Third(request) => app.answer(request).await,
            Either4::Fourth(status) => {
                connected = status.connected;
                if connected {
                    info!("gateway link up (link {}, session resumed: {})", status.links, status.resumed);
                } else {
                    info!("gateway link down; reconnecting");
                }
                app.board.link_changed(&status);
            }
        }
    }
}

/// The next status whose `connected` differs from `connected`; never, without a watcher (all
/// [`rivulet_embassy::STATUS_WATCHERS`] taken by others).
async fn link_change<M: RawMutex>(watcher: &mut Option<StatusWatcher<'_, M>>, connected: bool) -> LinkStatus {
    match watcher {
        Some(watcher) => watcher.wait_for(|status| status.connected != connected).await,
        None => core::future::pending().await,
    }
}

/// The application's state, owned by the one loop in [`run`]: no locks, no shared cells.
struct App<'a, 'd, B, M: RawMutex, I> {
    device: &'a Device<'d, M>,
    board: &'a mut B,
    images: &'a mut I,
    types: Types,
    led: bool,
    period: Duration,
    counters: Counters,
}

impl<B: Board, M: RawMutex, I> core::fmt::Debug for App<'_, '_, B, M, I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("App").field("led", &self.led).field("counters", &self.counters).finish_non_exhaustive()
    }
}

impl<B: Board, M: RawMutex, I: Images> App<'_, '_, B, M, I> {
    async fn telemetry(&mut self) {
        let (device, counters, types) = (self.device, &mut self.counters, &self.types);
        if let Some(hundredths) = self.board.die_temperature() {
            register(device, counters, &types.temperature, json::hundredths::<PAYLOAD_BYTES>(hundredths).as_deref())
                .await;
        }
        let uptime = json::number::<PAYLOAD_BYTES>(self.board.uptime().as_millis());
        register(device, counters, &types.uptime, uptime.as_deref()).await;
        let payload = counters_json(counters, &device.status());
        register(device, counters, &types.counters, payload.as_deref()).await;
    }

    /// Registers the LED's state, so the gateway's latest table shows it.
    async fn report_led(&mut self) {
        let payload = if self.led { "true" } else { "false" };
        register(self.device, &mut self.counters, &self.types.led, Some(payload)).await;
    }

    /// Carries out a command event; returns whether the telemetry period changed.
    async fn command(&mut self, event: &Event) -> bool {
        self.counters.commands = self.counters.commands.wrapping_add(1);
        let text = match &event.payload {
            Some(EventPayload::Json(text)) => text.as_str().trim(),
            _ => "",
        };
        // Subscribed to `command/<name>/*`: the third segment names the command.
        let mut segments = event.event_type.segments();
        let command = match (segments.nth(2), segments.next()) {
            (Some(command), None) => command,
            _ => "",
        };
        match (command, text) {
            ("led", "true" | "false") => {
                self.led = text == "true";
                self.board.set_led(self.led);
                info!("command: LED {}", if self.led { "on" } else { "off" });
                self.report_led().await;
                false
            }
            ("period", _) => match text.parse::<u32>() {
                Ok(ms) if PERIOD_MS.contains(&ms) => {
                    self.period = Duration::from_millis(u64::from(ms));
                    info!("command: telemetry every {} ms", ms);
                    true
                }
                _ => self.reject(command, text),
            },
            _ => self.reject(command, text),
        }
    }

    fn reject(&mut self, command: &str, payload: &str) -> bool {
        self.counters.rejected = self.counters.rejected.wrapping_add(1);
        warn!("command {} with payload {} not understood", command, payload);
        false
    }

    async fn answer(&mut self, request: Request) {
        self.counters.requests = self.counters.requests.wrapping_add(1);
        if rivulet_core::files::is_file_request(request.rq_type) {
            return self.images.answer(self.device, self.board, &request).await;
        }
        let answered = match request.rq_type {
            RQ_INFO => {
                let info = Info {
                    version: B::FIRMWARE_VERSION,
                    board: B::NAME,
                    uptime_ms: self.board.uptime().as_millis(),
                    led: self.led,
                    period_ms: self.period.as_millis(),
                    stack_used: self.board.stack_used(),
                    links: self.device.status().links,
                    counters: self.counters,
                };
                match info.to_json() {
                    Some(json) => self.device.respond(request.from, 0, json.as_bytes()).await,
                    None => self.device.refuse(request.from, "info does not fit in one answer").await,
                }
            }
            _ => self.device.refuse(request.from, "unknown request type (1 is info)").await,
        };
        if let Err(error) = answered {
            // The link the request came on has ended: the gateway has failed it already.
            debug!("request {} not answered: {}", request.rq_type, error);
        }
    }
}

/// Queues one event for registration. A full outbox drops it (counted): the next reading
/// replaces it anyway, and waiting would hold up commands and requests.
async fn register<M: RawMutex>(
    device: &Device<'_, M>,
    counters: &mut Counters,
    event_type: &EventType,
    payload: Option<&str>,
) {
    let Some(payload) = payload else {
        // A payload that did not fit PAYLOAD_BYTES; the formats here never get near it.
        counters.dropped = counters.dropped.wrapping_add(1);
        return;
    };
    match device.register(event_type, None, Some(EventPayloadRef::Json(payload))).await {
        Ok(_) => counters.telemetry = counters.telemetry.wrapping_add(1),
        Err(rivulet_embassy::Error::OutboxFull) => {
            counters.dropped = counters.dropped.wrapping_add(1);
            debug!("outbox full: telemetry dropped");
        }
        Err(error) => {
            counters.dropped = counters.dropped.wrapping_add(1);
            warn!("telemetry not registered: {}", error);
        }
    }
}

/// The `counters` telemetry: at most 184 bytes (eight numbers of ten digits), well inside
/// [`PAYLOAD_BYTES`].
fn counters_json(counters: &Counters, link: &LinkStatus) -> Option<heapless::String<PAYLOAD_BYTES>> {
    let mut json = json::Json::<PAYLOAD_BYTES>::object();
    json.u32("telemetry", counters.telemetry)
        .u32("dropped", counters.dropped)
        .u32("commands", counters.commands)
        .u32("rejected", counters.rejected)
        .u32("requests", counters.requests)
        .u32("links", link.links)
        .u32("connect_failures", link.connect_failures)
        .u32("bad_frames", link.bad_frames);
    json.finish()
}

/// What the answer to [`RQ_INFO`] says.
struct Info {
    version: &'static str,
    board: &'static str,
    uptime_ms: u64,
    led: bool,
    period_ms: u64,
    stack_used: Option<u32>,
    links: u32,
    counters: Counters,
}

impl Info {
    /// `{"version":"0.1.0","board":"qemu-mps2-an386","uptime_ms":61000,"led":true,"period_ms":1000,
    /// "stack_used":5120,"links":1,"telemetry":180,"dropped":0,"commands":1,"rejected":0,"requests":2}`
    /// (`stack_used` is `null` where the board does not measure it). `None` if it does not fit
    /// [`ANSWER_BYTES`]; ten years of uptime with a billion telemetry events fit (the test
    /// below), every counter in the billions at once would not.
    fn to_json(&self) -> Option<heapless::String<ANSWER_BYTES>> {
        let mut json = json::Json::<ANSWER_BYTES>::object();
        json.str("version", self.version)
            .str("board", self.board)
            .u64("uptime_ms", self.uptime_ms)
            .bool("led", self.led)
            .u64("period_ms", self.period_ms)
            .u32_or_null("stack_used", self.stack_used)
            .u32("links", self.links)
            .u32("telemetry", self.counters.telemetry)
            .u32("dropped", self.counters.dropped)
            .u32("commands", self.counters.commands)
            .u32("rejected", self.counters.rejected)
            .u32("requests", self.counters.requests);
        json.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_and_info_fit() {
        let big = Counters {
            telemetry: u32::MAX,
            dropped: u32::MAX,
            commands: u32::MAX,
            rejected: u32::MAX,
            requests: u32::MAX,
        };
        let link =
            LinkStatus { links: u32::MAX, connect_failures: u32::MAX, bad_frames: u32::MAX, ..LinkStatus::INITIAL };
        let counters = counters_json(&big, &link).expect("counters fit");
        assert_eq!(counters.len(), 184);

        let info = Info {
            version: "0.1.0",
            board: "qemu-mps2-an386",
            uptime_ms: 61_000,
            led: true,
            period_ms: 1000,
            stack_used: Some(5120),
            links: 1,
            counters: Counters { telemetry: 180, dropped: 0, commands: 1, rejected: 0, requests: 2 },
        };
        assert_eq!(
            info.to_json().as_deref(),
            Some(
                r#"{"version":"0.1.0","board":"qemu-mps2-an386","uptime_ms":61000,"led":true,"period_ms":1000,"stack_used":5120,"links":1,"telemetry":180,"dropped":0,"commands":1,"rejected":0,"requests":2}"#
            )
        );
        // Names of BOARD_TEXT_MAX bytes, ten years up, a billion telemetry events (and as many
        // dropped), a million of everything else, the longest period, 512 KiB of stack.
        let ten_years = Info {
            version: "1234567890123456",
            board: "1234567890123456",
            uptime_ms: 10 * 365 * 24 * 3_600_000,
            led: false,
            period_ms: 3_600_000,
            stack_used: Some(512 * 1024),
            links: 1_000_000,
            counters: Counters {
                telemetry: 1_000_000_000,
                dropped: 1_000_000_000,
                commands: 1_000_000,
                rejected: 1_000_000,
                requests: 1_000_000,
            },
        };
        let json = ten_years.to_json().expect("ten years fit");
        assert!(json.len() <= ANSWER_BYTES, "{}", json.len());
        let overflowing =
            Info { links: u32::MAX, counters: Counters { commands: u32::MAX, ..ten_years.counters }, ..ten_years };
        assert_eq!(overflowing.to_json(), None, "refused, not cut");
    }

    #[test]
    fn types_follow_the_name() {
        let types = Types::new("qemu").expect("a valid name");
        assert_eq!(types.uptime.to_string(), "device/qemu/telemetry/uptime");
        assert_eq!(types.led.to_string(), "device/qemu/state/led");
        assert_eq!(types.commands.to_string(), "command/qemu/*");
        let longest = "n".repeat(config::NAME_MAX);
        assert!(Types::new(&longest).is_ok(), "the longest name fits every type");
        assert!(matches!(Types::new("a/b"), Err(SetupError::InvalidName)));
    }
}
