-- A search for words the trigram index cannot narrow (all under three characters) reads the text
-- rows newest first and stops at a page, instead of scanning the whole trigram index. Searches
-- with a longer word keep the trigram index (the query orders by `time_ms + 0` for them).
CREATE INDEX audit_text_time ON audit_text (time_ms, source, seq);
