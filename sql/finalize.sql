-- Privileges. Nobody but the owner reads or writes the table directly: the
-- functions that touch it are SECURITY DEFINER with a pinned search_path.
-- EXECUTE is granted by the DBA (see README, "Security model").
REVOKE ALL ON TABLE castle.sessions FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA castle FROM PUBLIC;
GRANT USAGE ON SCHEMA castle TO PUBLIC;
