-- A user whose role changes (by any means, SQL included) loses every session issued under the
-- old role (D-P5); deleting a user already cascades to their sessions.
CREATE OR REPLACE FUNCTION queen_proxy.revoke_sessions_on_role_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role IS DISTINCT FROM OLD.role THEN
        DELETE FROM queen_proxy.sessions WHERE user_id = NEW.id;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS users_role_change_revokes ON queen_proxy.users;
CREATE TRIGGER users_role_change_revokes AFTER UPDATE OF role ON queen_proxy.users
    FOR EACH ROW EXECUTE FUNCTION queen_proxy.revoke_sessions_on_role_change();
