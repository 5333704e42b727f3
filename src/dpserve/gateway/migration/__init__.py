"""Mid-stream migration: a response cut after its first byte continues on another replica.

The proxy relays bytes as before and only remembers them (`stream_record`); when a stream breaks
it asks `retry.decide_break` whether to go on, `continuation` builds the request that resumes it
(prompt token ids + the ids generated so far on /v1/completions, or the text so far), and
`job.ResumeJob` relays the new replica's stream in the client's shape (`output`), so the client
sees one uninterrupted response. Non-streaming requests are streamed from the replica internally
and answered with one JSON body, so they resume the same way.
"""
