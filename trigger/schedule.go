package trigger

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/godwit-dev/godwit/outbox"
)

// maxCatchUp bounds the search for the latest missed run of a schedule.
const maxCatchUp = 1 << 20

// runScheduled fires a scheduled trigger until ctx ends. Runs missed while
// godwit was down (or the trigger disabled) are made up for by one run at
// the latest missed time, unless skip_missed_runs is set.
func (m *Manager) runScheduled(ctx context.Context, a *active, log zerolog.Logger) {
	t := a.t
	sched, err := ParseSchedule(t.Scheduled.Schedule)
	if err != nil {
		m.recordErr(t.ID, err.Error())
		return
	}
	clock := m.cfg.Clock
	last := t.LastFired
	if last.IsZero() {
		last = clock.Now().UTC()
	}
	if missed := latestBefore(sched, last, clock.Now()); !missed.IsZero() {
		if t.Scheduled.SkipMissedRuns {
			log.Info().Time("missed", missed).Msg("skipping runs missed while the trigger was not running")
			last = missed
			m.saveLastFired(ctx, t.ID, last)
		} else {
			log.Info().Time("missed", missed).Msg("running once for runs missed while the trigger was not running")
			m.fireScheduled(ctx, a, missed, log)
			last = missed
		}
	}
	for {
		next := sched.Next(last)
		for {
			now := clock.Now()
			if !now.Before(next) {
				break
			}
			select {
			case <-clock.After(next.Sub(now)):
			case <-ctx.Done():
				return
			}
		}
		m.fireScheduled(ctx, a, next, log)
		if ctx.Err() != nil {
			return
		}
		last = next
	}
}

// latestBefore returns the latest activation after last and not after
// now, or zero when there is none.
func latestBefore(s Schedule, last, now time.Time) time.Time {
	var latest time.Time
	for i, n := 0, s.Next(last); !n.After(now) && i < maxCatchUp; i, n = i+1, s.Next(n) {
		latest = n
	}
	return latest
}

// fireScheduled queues the run at for the trigger's runner, which calls
// the function, retries with backoff and parks a run that keeps failing
// in the trigger's dead letters. The run is stored as the last one once it
// is queued: a crash in between makes it run again at the restart (at
// least once), never not at all.
func (m *Manager) fireScheduled(ctx context.Context, a *active, at time.Time, log zerolog.Logger) {
	t := a.t
	ev, err := bson.Marshal(bson.D{
		{Key: "_id", Value: fmt.Sprintf("%s:%d", t.ID, at.Unix())},
		{Key: "operationType", Value: "scheduled"},
		{Key: "triggerId", Value: t.ID},
		{Key: "triggerName", Value: t.Name},
		{Key: "scheduledTime", Value: primitive.NewDateTimeFromTime(at)},
		{Key: "firedAt", Value: primitive.NewDateTimeFromTime(m.cfg.Clock.Now())},
	})
	var prev time.Time
	if err == nil {
		// Shown by Status before the append, which makes the run visible
		// to the runner; taken back if the append fails.
		m.update(t.ID, func(s *stats) { prev, s.queued = s.queued, at })
		if _, err = m.queue.Append(ctx, queueSchedule, [][]byte{ev}, outbox.Checkpoint{}); err != nil {
			m.update(t.ID, func(s *stats) { s.queued = prev })
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			m.recordErr(t.ID, err.Error())
			log.Error().Err(err).Time("scheduled", at).Msg("could not queue the scheduled run")
		}
		return
	}
	m.saveLastFired(ctx, t.ID, at)
}

func (m *Manager) saveLastFired(ctx context.Context, id string, at time.Time) {
	_, err := m.store.triggers.UpdateOne(context.WithoutCancel(ctx), bson.M{"_id": id},
		bson.M{"$set": bson.M{"last_fired": at.UTC()}})
	if err != nil {
		m.log.Error().Err(err).Str("trigger_id", id).Msg("could not store the last scheduled run")
	}
}
