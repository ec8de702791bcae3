package main

// Which login each asynq component of the scenario connects with. Without
// -logins every component shares the -username/-password login and one
// Server works all queues; with it, each role has its own login and every
// queue its own Server.

import "github.com/hibiken/asynq"

// dashboard is the read-only part of the Inspector. The scenario reads
// only through it, so that with -logins no read can slip through on the
// operator's login and hide a read the dashboard role is refused.
type dashboard interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
	Groups(queue string) ([]*asynq.GroupInfo, error)
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	ListPendingTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListActiveTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListScheduledTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListRetryTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListArchivedTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListCompletedTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListAggregatingTasks(queue, group string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	Servers() ([]*asynq.ServerInfo, error)
	SchedulerEntries() ([]*asynq.SchedulerEntry, error)
	ListSchedulerEnqueueEvents(entryID string, opts ...asynq.ListOption) ([]*asynq.SchedulerEnqueueEvent, error)
}

// operator is the part of the Inspector that changes state, as far as
// the scenario uses it.
type operator interface {
	CancelProcessing(id string) error
	RunTask(queue, id string) error
}

// connections holds the connection options of every component.
type connections struct {
	producer, scheduler, dashboard, operator asynq.RedisClientOpt
	// workers maps each queue to the login of the Server working it; nil
	// when shared.
	workers map[string]asynq.RedisClientOpt
	shared  bool // one login for everything: dashboard and operator are one Inspector
}

func newConnections(cfg config) connections {
	if cfg.logins == nil {
		opt := redisOpt(cfg, login{cfg.username, cfg.password})
		return connections{producer: opt, scheduler: opt, dashboard: opt, operator: opt, shared: true}
	}
	l := cfg.logins
	c := connections{
		producer:  redisOpt(cfg, *l.Producer),
		scheduler: redisOpt(cfg, *l.Scheduler),
		dashboard: redisOpt(cfg, *l.Dashboard),
		operator:  redisOpt(cfg, *l.Operator),
		workers:   map[string]asynq.RedisClientOpt{},
	}
	for q, w := range l.Workers {
		c.workers[q] = redisOpt(cfg, w)
	}
	return c
}

// serverPlan is one Server the scenario starts: its login and queues.
type serverPlan struct {
	redis  asynq.RedisClientOpt
	queues map[string]int
}

// servers lists the Servers to start, in a fixed order. The shared-login
// run keeps the single Server with weighted priorities it always had; per
// queue Servers get weight 1, as priorities mean nothing with one queue.
func (c connections) servers() []serverPlan {
	if c.shared {
		queues := map[string]int{periodicQueue: 1}
		for i, q := range workQueues {
			queues[q] = 2 * (len(workQueues) - i) // critical 6, default 4, low 2
		}
		// Shared: every field holds the one login, producer included.
		return []serverPlan{{redis: c.producer, queues: queues}}
	}
	var plans []serverPlan
	for _, q := range sortedKeys(c.workers) {
		plans = append(plans, serverPlan{redis: c.workers[q], queues: map[string]int{q: 1}})
	}
	return plans
}
