package engine

// Event types of the operational safety checks.
const (
	// EventWarning is something a person should know that does not stop the run: step 1
	// lowering a canary above its even share, a promotion on the pool that just ended.
	EventWarning = "warning"
	// EventClaim is the run's claim on its pool taken, taken over, renewed or released.
	EventClaim = "claim"
	// EventCapacityFailed is a capacity hook that failed where the engine went on without
	// it (before a rollback): someone should check the capacity.
	EventCapacityFailed = "capacity_failed"
)
