-- Leases know the worker incarnation that took them, so a restarted worker can give back at
-- once what its crashed predecessor held instead of letting those partitions stall until expiry.
ALTER TABLE queen.partition_consumers ADD COLUMN lease_owner text;
