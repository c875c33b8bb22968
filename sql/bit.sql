-- Operators of PostgreSQL's `bit` type for pgvector's bit distances.
-- Functions are created by pgrx from src/vector/bit.rs before this file runs.

CREATE OPERATOR <~> (LEFTARG = bit, RIGHTARG = bit, PROCEDURE = hamming_distance, COMMUTATOR = '<~>');
CREATE OPERATOR <%> (LEFTARG = bit, RIGHTARG = bit, PROCEDURE = jaccard_distance, COMMUTATOR = '<%>');
