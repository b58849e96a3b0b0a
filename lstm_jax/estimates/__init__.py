"""Step-time estimates of the recurrences on chips this machine may lack: the chips' figures and every assumption
(``chips``), the cost model (``step_time``) and what the chips' compilers say about the compiled programs
(``evidence``). ``recurrence=auto`` picks the candidate with the lowest estimate (``choose``)."""
