//! The gateway dies mid-transfer and comes back: the board and its agent are killed with
//! SIGKILL (a power cut of the gateway) while the image streams to the MCU, and the board is
//! started again. The journal held the child update's intent, so the new agent resumes it on
//! its own, and the transfer continues from the offset the MCU had confirmed in its flash
//! rather than from 0. The MCU never resets; the moment of the cut is chosen by the MCU, which
//! stops answering in the middle of the image until the test has killed the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod gateway_support;

use common::{Daemon, RUN_LIMIT, run};
use gateway_support::{
    ImageSpec, Mcu, McuEvent, McuSetup, PAGE, Req, child_reports, gateway, layout, mcu_info,
    release_for, running_version,
};
use swell_agent::gateway::State;
use swell_firmware::Phase;
use swell_firmware::transfer::Response;
use swell_proto::messages::UpdateState;

/// Killing the gateway mid-transfer and starting it again resumes from the MCU's confirmed
/// offset, and the update ends committed with each report sent once.
#[test]
fn a_transfer_cut_by_the_gateway_resumes_from_the_mcus_confirmed_offset() {
    let factory = ImageSpec::new((1, 0, 0), 1).build();
    let new = ImageSpec::new((1, 1, 0), 2);
    let image = new.build();
    // Past the middle of the image and not on a page boundary.
    let cut_at = u32::try_from(image.len() / 2).unwrap() / 256 * 256 + 256;
    let mcu = Mcu::start(McuSetup {
        factory,
        pause_at: Some(cut_at),
    });
    let gw = gateway(&mcu);
    let (manifest, staged) = gw.stage(&release_for(&new));

    let log = gw.path().join("board-1.log");
    let mut board = Daemon::start(
        gw.board_install(&manifest, &staged.display().to_string()),
        &log,
    );
    let confirmed = loop {
        if let McuEvent::Paused { received } = mcu.next() {
            break received;
        }
    };
    board.kill("KILL");
    // The killed agent's lock goes with the process: once it can be taken, it is dead.
    let lock = std::fs::File::open(gw.data.join("agent.lock")).unwrap();
    lock.lock().unwrap();
    lock.unlock().unwrap();
    assert!(
        confirmed > 0 && confirmed.is_multiple_of(PAGE) && confirmed < cut_at,
        "the MCU confirmed {confirmed} bytes at the cut"
    );
    let p = gw.journal();
    assert!(
        matches!(p.children[0].state, Some(State::Transferring(_))),
        "the journal does not hold the transfer in progress: {:?}",
        p.children[0].state
    );
    let before = child_reports(&gw);

    mcu.go_on();
    let out = run(gw.agent(&["board", "--until-settled"]), RUN_LIMIT);
    assert!(out.status.success(), "second board: {}", out.stderr);

    // The new agent's exchange: HELLO, BEGIN answered READY at the confirmed offset, DATA
    // from there on, never below it.
    let answered: Vec<(Req, Option<Response>)> = mcu
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            McuEvent::Answered { request, answer } => Some((request, answer)),
            _ => None,
        })
        .collect();
    let begin = answered
        .iter()
        .position(|(r, _)| *r == Req::Begin)
        .expect("no BEGIN after the restart");
    let Some(Response::Ready { resume, total, .. }) = answered[begin].1 else {
        panic!("BEGIN answered {:?}", answered[begin].1)
    };
    assert_eq!(total as usize, image.len());
    assert!(
        resume >= confirmed && resume > 0,
        "resumed at {resume}, the MCU had confirmed {confirmed}"
    );
    let offsets: Vec<u32> = answered[begin..]
        .iter()
        .filter_map(|(r, _)| match r {
            Req::Data { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        offsets.first(),
        Some(&resume),
        "the first DATA is not at {resume}"
    );
    assert!(offsets.iter().all(|o| *o >= resume));
    let sent: u32 = answered[begin..]
        .iter()
        .filter_map(|(r, _)| match r {
            Req::Data { len, .. } => Some(u32::try_from(*len).unwrap()),
            _ => None,
        })
        .sum();
    assert_eq!(sent, total - resume, "the rest of the image, once");

    let reports = child_reports(&gw);
    assert_eq!(before.len(), 1, "before the cut: downloading");
    assert_eq!(reports[..1], before[..]);
    let states: Vec<UpdateState> = reports.iter().map(|(_, r)| r.state).collect();
    assert_eq!(
        states,
        [
            UpdateState::Downloading,
            UpdateState::Installed,
            UpdateState::Trial,
            UpdateState::Committed
        ]
    );
    let seqs: Vec<u64> = reports.iter().map(|(s, _)| *s).collect();
    common::assert_increasing(&seqs);

    let mut flash = mcu.stop();
    let info = mcu_info(&mut flash);
    assert_eq!(info.phase, Phase::Committed);
    assert_eq!(running_version(&info), "1.1.0");
    let active = layout(&flash).active().offset as usize;
    assert!(flash.bytes()[active..active + image.len()] == image[..]);
}
