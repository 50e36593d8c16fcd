// Package route53 steers traffic between clusters through an AWS Route 53 weighted
// record set: the traffic.Steerer for setups whose clusters get their traffic from
// weighted DNS rather than a Cloudflare load balancer pool.
//
// # Addressing
//
// A traffic.PoolRef names one weighted record set: Account is the hosted zone ID
// ("Z0123456789ABCDEFGHIJ"; a "/hostedzone/" prefix is accepted) and Pool is the record
// name and type joined by a slash, "api.example.com./A". Ref builds one and ParseRef
// reads one back; names are matched case-insensitively, with or without the final dot.
// Each weighted record of the set is one traffic.Origin, named by its SetIdentifier:
// one record per cluster.
//
// # Weights
//
// Route 53 weights are integers 0 to 255 and relative within the set: a record gets
// weight/sum of the answers. Verdict's weights are fractions 0 to 1 on a 0.01 grid,
// relative within the pool as well, so the mapping is linear with a fixed scale of
// MaxWeight (255): Pool reports weight/255 exactly as stored, and SetWeights writes
// Units(w) = round(w×255). A linear map keeps every ratio, so the records outside an
// experiment keep exactly the share the experiment's weights leave them, and a fixed
// scale keeps a record's reported weight independent of the other records. 255 rather
// than 100 because it is Route 53's whole range: every weight a person or Terraform can
// set reads as a fraction within 0..1, and every Verdict weight is writable. The price
// is granularity: 1/255 ≈ 0.0039, so a grid weight is stored up to 1/510 ≈ 0.002 off
// (0.01 → 3, read back as 0.0118), inside traffic.SameWeight's 0.005 tolerance, and every
// grid weight maps to a distinct integer, so nothing Verdict writes is ambiguous when
// read back. Plans should show Units next to the fraction: a 1% canary beside a 99%
// baseline is 3:252, an effective 1.18% of answers.
//
// A record at weight 0 is still a member of the set (Route 53 answers with it when every
// record in the set is 0, or when every weighted record with a positive weight fails its
// health check), so every origin is reported Enabled: Route 53 has no per-record switch.
// SetWeights refuses a change that would leave the whole set at 0, because Route 53
// then splits answers equally between all records, the opposite of "no traffic".
//
// # Writes
//
// SetWeights reads the set, refuses drift from expect (traffic.CheckDrift) and invalid
// requests (traffic.CheckRequest), then sends one ChangeResourceRecordSets batch with an
// UPSERT for each record whose integer weight changes, every other field exactly as
// read; records not named in want, and other record names, are never in the batch.
// Route 53 applies a batch atomically, so a write interrupted at any point leaves either
// all the old weights or all the new ones. It then polls GetChange until the change is
// INSYNC (bounded by Options.SyncTimeout) and reads the set back. Throttling and
// PriorRequestNotComplete are retried with backoff and jitter; before every retry the
// set is read again and any difference from the first read stops the write with a
// *traffic.DriftError rather than revert it.
//
// # TTL
//
// Resolvers and clients cache answers for the record's TTL, so a weight change reaches
// all clients only one TTL after INSYNC. Steerer.TTL reports it (the largest TTL in the
// set; AliasTTL for alias records) so the engine can use it as the minimum settle time.
//
// # Claims
//
// The set's claim lives in a TXT record next to it, ClaimName(ref), which Pool reports as
// the pool's Description; claiming writes only that TXT record.
package route53
