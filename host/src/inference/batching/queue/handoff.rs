//! Who runs a ready batch, and the turn it holds while it runs.
//!
//! A batch runs on one of its members' threads while the others wait. The leader (the
//! first to arrive) is the natural choice, but under load it is often a guest thread in
//! the kernel's idle class (`SCHED_IDLE`: a background thread, or one demoted after a long
//! run; see `runtime::priority`), and an unprivileged thread cannot leave that class. Run
//! there, the batch yields the CPU to everything else at normal priority while every
//! member waits on it, and for a shared version those members may be another tenant's
//! foreground requests. So a leader in the idle class hands the batch to a member whose
//! thread is not, and waits for its own slice like any follower; with no such member it
//! runs the batch itself.
//!
//! The handed batch carries its [`Turn`]: its slot among the running batches and the
//! input bytes and members it holds. Whoever ends up with it gives them back, and so does
//! dropping it unrun (a member that left at its deadline just as the batch was handed to
//! it): then every member's channel closes and each runs alone, as after any leader that
//! went away.

use super::{Batcher, Open, Reply, State};
use crate::runtime::priority;
use crossbeam_channel::{bounded, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};

/// A batch taken to run, with its turn.
pub(super) struct Running {
    pub(super) batch: Open,
    pub(super) turn: Turn,
}

/// A running batch's slot, and the input bytes and members it holds until its outputs
/// are cut; given back when the batch is done with, on whichever thread holds it.
pub(super) struct Turn {
    state: Arc<Mutex<State>>,
    /// Input bytes and members, until [`Turn::release_held`].
    held: Option<(usize, usize)>,
}

impl Turn {
    /// The turn of `batch`, counted in `state.running` by the caller.
    pub(super) fn new(state: &Arc<Mutex<State>>, batch: &Open) -> Self {
        Self {
            state: state.clone(),
            held: Some((batch.bytes, batch.members.len())),
        }
    }

    /// The batch has run: its inputs no longer count against the batcher's limits.
    pub(super) fn release_held(&mut self) {
        if let Some(held) = self.held.take() {
            release(&mut lock(&self.state), held);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(held) = self.held.take() {
            release(&mut state, held);
        }
        state.running = state.running.saturating_sub(1);
        Batcher::wake_leaders(&state);
    }
}

fn release(state: &mut State, (bytes, members): (usize, usize)) {
    state.held_bytes = state.held_bytes.saturating_sub(bytes);
    state.held_members = state.held_members.saturating_sub(members);
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the calling thread may not wait on a batch's run at normal priority.
pub(super) fn this_thread_is_idle() -> bool {
    priority::this_thread_is_demoted()
}

/// Hands `running` to a member whose thread is not in the idle class when the calling
/// thread (its leader) is; the leader then waits on the returned receiver for its slice.
/// Gives the batch back when the leader should run it itself: its thread is not idle, no
/// member's is, or every such member has left.
pub(super) fn hand_over(mut running: Running) -> Result<Receiver<Reply>, Running> {
    if !this_thread_is_idle() {
        return Err(running);
    }
    let (own_tx, own_rx) = bounded(1);
    let mut own_tx = Some(own_tx);
    for to in 1..running.batch.members.len() {
        let member = &running.batch.members[to];
        if member.idle || member.reply.is_none() {
            continue;
        }
        // The chosen member leads (first, with no reply channel: it answers itself) and
        // the leader becomes a follower at its place.
        let members = &mut running.batch.members;
        let Some(handed_to) = members[to].reply.take() else {
            continue;
        };
        members[0].reply = own_tx.take();
        members.swap(0, to);
        match handed_to.send(Reply::Lead(running)) {
            Ok(()) => return Ok(own_rx),
            Err(returned) => {
                // It left (its deadline passed): undo, and try the next one.
                let Reply::Lead(back) = returned.into_inner() else {
                    unreachable!("the message sent was a Lead");
                };
                running = back;
                let members = &mut running.batch.members;
                members.swap(0, to);
                own_tx = members[0].reply.take();
                members[to].reply = Some(handed_to);
            }
        }
    }
    Err(running)
}
