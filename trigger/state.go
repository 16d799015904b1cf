package trigger

// State is a trigger's runtime state (Status.State), shown as its string
// by status, the admin and trigger APIs and metrics: one of StateRunning,
// StateDisabled, StateHalted, StateWaiting, StateError.
type State string
