//! The engine's report as the Lab's `Diagnostics` message.

use crate::{
    diagnose::{EventKind, Holder, Report, micros, task_description},
    proto::{self, timeline_event::Kind},
};

impl From<&Report> for proto::Diagnostics {
    fn from(report: &Report) -> Self {
        let s = &report.split;
        let interval = |(from, to): (u64, u64)| proto::Interval {
            from_us: report.offset_us(from),
            to_us: report.offset_us(to),
        };
        let with_timeline = !report.events.is_empty();
        let mut waits: Vec<_> = report
            .waits
            .iter()
            .map(|w| proto::Wait {
                stage: w.stage.to_owned(),
                kind: w.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
                us: micros(w.ns),
            })
            .collect();
        waits.sort_by_key(|w| std::cmp::Reverse(w.us));
        let culprits = report
            .culprits
            .iter()
            .map(|c| {
                let mut culprit = proto::Culprit {
                    overlap_us: micros(c.overlap),
                    share_us: micros(c.share),
                    polls: if with_timeline {
                        c.polls.iter().copied().map(interval).collect()
                    } else {
                        Vec::new()
                    },
                    ..proto::Culprit::default()
                };
                match &c.holder {
                    Holder::Request(who) => {
                        let (service, rpc) = who.service_and_method();
                        culprit.service = service.to_owned();
                        culprit.rpc = rpc.to_owned();
                        culprit.trace_id = who.trace_id();
                        culprit.span_id = who.span_id();
                    }
                    task @ Holder::Task { .. } => culprit.task = task_description(task),
                }
                culprit
            })
            .collect();
        let timeline = report
            .events
            .iter()
            .map(|e| proto::TimelineEvent {
                kind: match e.kind {
                    EventKind::Poll => Kind::Poll,
                    EventKind::Scheduled => Kind::Scheduled,
                    EventKind::Idle => Kind::Idle,
                }
                .into(),
                from_us: report.offset_us(e.from),
                to_us: report.offset_us(e.to),
                on_cpu_us: micros(e.on_cpu),
                stage: e.stage.to_owned(),
            })
            .collect();
        Self {
            trace_id: report.identity.trace_id(),
            total_us: micros(s.total),
            busy_us: micros(s.busy),
            scheduled_us: micros(s.scheduled),
            idle_us: micros(s.idle_total()),
            queue_us: micros(s.queue()),
            verdict: report.verdict().as_str().to_owned(),
            polls: s.polls,
            max_poll_us: micros(s.max_poll),
            on_cpu_us: micros(s.on_cpu),
            cpu_wait_us: micros(s.cpu_wait),
            blamed_us: micros(s.blamed),
            waits,
            culprits,
            timeline,
        }
    }
}
