-- The start of an assignment as ONE round trip (an experiment: docs/decisions/0008).
--
--   SELECT * FROM learncredits_start(org_id, assignment_id, actor, now);
--
-- does in one statement, called in autocommit (so its transaction is this one statement,
-- committed as it returns), everything credits.actions.start_assignment does in its
-- transaction: lock and read the balance, read the assignment, decide, write the ledger
-- entry, the lot draws, the lots' remainders, the assignment, the balance and its at-risk
-- flag, and the rows of credits.events / credits.alerts. It writes exactly the rows the
-- Python path writes (same tables, same values; ids and timestamps aside) and answers with
-- one row that bench/start_sql/path.py maps to start_assignment's own outcomes.
--
-- Why PL/pgSQL and not one data-modifying statement (CTEs): all of a statement's CTEs share
-- one snapshot, taken before the statement waits for the balance lock, so the assignment
-- and the lots would be read as they were before the previous holder of the lock committed
-- (READ COMMITTED re-reads only the locked row). In a VOLATILE PL/pgSQL function each
-- statement takes a new snapshot, so everything read after the lock is current, exactly
-- as in credits.actions._lock_and_read_for_start (which reads in a second statement for the
-- same reason).
--
-- Results (r_outcome):
--   'no_balance'  the org has no balance row         -> Balance.DoesNotExist
--   'not_found'   no such assignment in this org      -> NotFound("assignment not found")
--   'refused'     the lifecycle refuses the start     -> InvalidState (domain.lifecycle.decide)
--   'noop'        already started or completed        -> the assignment, unchanged
--   'started'     started and charged                 -> the started assignment
-- with the assignment's columns (as after the call), and for the auto top-up rule the
-- org's available before and after and its trigger. Nothing is written unless 'started'.
--
-- Names are the models' tables and columns (credits_balance, credits_assignment, ...); the
-- string values are the models' choices (Assignment.Status, LedgerEntry.Type, Alert.Kind)
-- and the event types of credits.events.

CREATE OR REPLACE FUNCTION learncredits_start(
    p_org_id bigint,
    p_assignment_id bigint,
    p_actor text,
    p_now timestamptz,
    OUT r_outcome text,
    OUT r_id bigint,
    OUT r_employee_id bigint,
    OUT r_content_id bigint,
    OUT r_status text,
    OUT r_credit_cost integer,
    OUT r_charged_credits integer,
    OUT r_overage_credits integer,
    OUT r_created_at timestamptz,
    OUT r_started_at timestamptz,
    OUT r_completed_at timestamptz,
    OUT r_cancelled_at timestamptz,
    OUT r_available_before bigint,
    OUT r_available_after bigint,
    OUT r_auto_top_up_below integer
)
LANGUAGE plpgsql
VOLATILE  -- a new snapshot for every statement (see above); also the default
AS $$
DECLARE
    v_credits bigint;
    v_assigned bigint;
    v_at_risk boolean;       -- the flag as the balance row holds it (its last write)
    v_threshold integer;
    v_percent integer;       -- the threshold as a percentage of the credits held, or null
    v_line bigint;           -- the threshold in credits (domain/balance.AlertThreshold.line)
    v_risk_data jsonb;
    v_timezone text;
    v_from_balance bigint;
    v_overage bigint;
    v_retail bigint;
    v_entry_id bigint;
    v_needed bigint;
    v_take bigint;
    v_lot record;
    v_now_at_risk boolean;
    v_period text;
    v_first boolean;
    v_rows integer;
BEGIN
    -- Rule: the org's balance row is the first row locked, by every write path
    -- (decision 0001, credits/locking.py): starts of one org run one at a time, and no two
    -- actions can wait on each other in opposite orders. The org's alert threshold, time
    -- zone and auto top-up trigger come with it (the Python path has the org loaded).
    SELECT b.credits, b.assigned, b.at_risk, o.alert_threshold, o.alert_threshold_percent,
           o.timezone, o.auto_top_up_below
      INTO v_credits, v_assigned, v_at_risk, v_threshold, v_percent, v_timezone,
           r_auto_top_up_below
      FROM credits_balance b
      JOIN tenancy_organization o ON o.id = b.org_id
     WHERE b.org_id = p_org_id
       FOR UPDATE OF b;
    IF NOT FOUND THEN
        r_outcome := 'no_balance';  -- locking.locked_from: Balance.DoesNotExist
        RETURN;
    END IF;
    r_available_before := v_credits - v_assigned;

    -- Rule (domain/lifecycle.py, Action.START): only an `assigned` assignment starts
    -- (APPLY); `started` and `completed` are a harmless repeat (NOOP: starting twice
    -- charges once); anything else (`cancelled`) is refused. The assignment must be the
    -- org's own: another org's id is "not found", like an unknown one.
    --
    -- Rule (domain/balance.split_start): the cost is paid from the balance first,
    -- from_balance = min(cost, credits), and the rest is overage.
    --
    -- The Python path does not look at the employee: an `assigned` assignment of an
    -- inactive employee cannot exist (deactivate_employee cancels them under this same lock,
    -- reassignment refuses an inactive employee), so neither does this.
    UPDATE credits_assignment a
       SET status = 'started',
           started_at = p_now,
           charged_credits = LEAST(a.credit_cost, v_credits),
           overage_credits = a.credit_cost - LEAST(a.credit_cost, v_credits)
     WHERE a.id = p_assignment_id
       AND a.org_id = p_org_id
       AND a.status = 'assigned'
    RETURNING a.id, a.employee_id, a.content_id, a.status, a.credit_cost, a.charged_credits,
              a.overage_credits, a.created_at, a.started_at, a.completed_at, a.cancelled_at
         INTO r_id, r_employee_id, r_content_id, r_status, r_credit_cost, r_charged_credits,
              r_overage_credits, r_created_at, r_started_at, r_completed_at, r_cancelled_at;
    IF NOT FOUND THEN
        -- Not started here: say why (nothing has been written).
        SELECT a.id, a.employee_id, a.content_id, a.status, a.credit_cost, a.charged_credits,
               a.overage_credits, a.created_at, a.started_at, a.completed_at, a.cancelled_at
          INTO r_id, r_employee_id, r_content_id, r_status, r_credit_cost, r_charged_credits,
               r_overage_credits, r_created_at, r_started_at, r_completed_at, r_cancelled_at
          FROM credits_assignment a
         WHERE a.id = p_assignment_id AND a.org_id = p_org_id;
        IF NOT FOUND THEN
            r_outcome := 'not_found';
        ELSIF r_status IN ('started', 'completed') THEN
            r_outcome := 'noop';
        ELSE
            r_outcome := 'refused';
        END IF;
        RETURN;
    END IF;
    v_from_balance := r_charged_credits;
    v_overage := r_overage_credits;

    -- Event `assignment.started` (actions._event_data), after the assignment's update, as
    -- the first of the start's events.
    INSERT INTO notify_event (org_id, type, data, created_at, dispatched_at)
    VALUES (p_org_id, 'assignment.started',
            jsonb_build_object(
                'id', 'asg_' || r_id,
                'employee_id', 'emp_' || r_employee_id,
                'content_id', 'cnt_' || r_content_id,
                'status', r_status,
                'credit_cost', r_credit_cost,
                'charged_credits', r_charged_credits,
                'overage_credits', r_overage_credits),
            p_now, NULL);

    -- Rule: a free item (cost 0) writes no ledger entry, so the balance row is not written
    -- either (actions._write_balance: no entries, no write, no at-risk evaluation).
    IF r_credit_cost = 0 THEN
        r_outcome := 'started';
        RETURN;
    END IF;

    -- Rule: overage is billed at the retail price of the price book in force, the newest
    -- version (catalog.services.current_price_book), or the default price book's 1000 cents
    -- (domain.pricing.DEFAULT_PRICE_BOOK) before any. Only read when there is overage; a
    -- consume without overage carries no price.
    IF v_overage > 0 THEN
        SELECT pb.retail_unit_price_cents INTO v_retail
          FROM catalog_pricebook pb
         ORDER BY pb.id DESC
         LIMIT 1;
        v_retail := COALESCE(v_retail, 1000);
    END IF;

    -- The `consume` ledger entry, carrying the balance right after it
    -- (credits_after / assigned_after): credits fall by from_balance, assigned by the cost.
    v_credits := v_credits - v_from_balance;
    v_assigned := v_assigned - r_credit_cost;
    INSERT INTO credits_ledgerentry (
        org_id, type, credits_delta, assigned_delta, overage_credits, retail_unit_price_cents,
        credits_after, assigned_after, assignment_id, purchase_id, lot_id, actor, reason,
        created_at)
    VALUES (
        p_org_id, 'consume', -v_from_balance, -r_credit_cost, v_overage, v_retail,
        v_credits, v_assigned, r_id, NULL, NULL, p_actor, '',
        p_now)
    RETURNING id INTO v_entry_id;

    -- Rule (domain/lots.draw_fifo): the credits paid from the balance are drawn from the
    -- org's open lots oldest first (lowest id first), each lot giving at most what remains
    -- of it; one lot draw row per lot drawn (the entry's cost basis), in lot order. Lots
    -- holding too little mean the balance and the lots disagree: a bug, never a user
    -- error (ValueError in Python, SQLSTATE LC001 here, and nothing is written).
    v_needed := v_from_balance;
    IF v_needed > 0 THEN
        FOR v_lot IN
            SELECT l.id, l.remaining
              FROM credits_creditlot l
             WHERE l.org_id = p_org_id AND l.remaining > 0
             ORDER BY l.id
        LOOP
            v_take := LEAST(v_needed, v_lot.remaining);
            UPDATE credits_creditlot l SET remaining = l.remaining - v_take WHERE l.id = v_lot.id;
            INSERT INTO credits_lotdraw (org_id, entry_id, lot_id, quantity)
            VALUES (p_org_id, v_entry_id, v_lot.id, v_take);
            v_needed := v_needed - v_take;
            EXIT WHEN v_needed = 0;
        END LOOP;
        IF v_needed > 0 THEN
            RAISE EXCEPTION 'lots hold % credits, % needed', v_from_balance - v_needed, v_from_balance
                USING ERRCODE = 'LC001';
        END IF;
    END IF;

    -- Rule (credits/alerts.overage_incurred): every overage emits `overage.incurred`; the
    -- first overage of the org's billing period (the calendar month in the org's own time
    -- zone, domain/periods.period_of) also opens the period's overage alert, once.
    IF v_overage > 0 THEN
        v_period := to_char(p_now AT TIME ZONE v_timezone, 'YYYY-MM');
        INSERT INTO notify_alert (org_id, kind, period, active, created_at, resolved_at, data)
        SELECT p_org_id, 'overage', v_period, true, p_now, NULL,
               jsonb_build_object(
                   'assignment_id', 'asg_' || r_id,
                   'overage_credits', v_overage,
                   'retail_unit_price_cents', v_retail,
                   'amount_cents', v_overage * v_retail)
         WHERE NOT EXISTS (
            SELECT 1 FROM notify_alert x
             WHERE x.org_id = p_org_id AND x.kind = 'overage' AND x.period = v_period);
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_first := v_rows = 1;
        INSERT INTO notify_event (org_id, type, data, created_at, dispatched_at)
        VALUES (p_org_id, 'overage.incurred',
                jsonb_build_object(
                    'assignment_id', 'asg_' || r_id,
                    'overage_credits', v_overage,
                    'retail_unit_price_cents', v_retail,
                    'amount_cents', v_overage * v_retail,
                    'period', v_period,
                    'first_of_period', v_first),
                p_now, NULL);
    END IF;

    -- Rule (domain/balance.is_at_risk): at risk when something is reserved and available
    -- (credits - assigned) has reached the org's alert threshold. The balance row keeps
    -- the flag; only a change that crosses the line opens the at-risk alert and emits
    -- `balance.at_risk`, or resolves it and emits `balance.recovered`
    -- (actions._write_balance, credits/alerts.at_risk_changed). The threshold is a number
    -- of credits, or a percentage of the credits held, rounded down.
    v_line := CASE WHEN v_percent IS NULL THEN v_threshold
                   ELSE (v_percent * greatest(v_credits, 0)) / 100 END;
    v_now_at_risk := v_assigned > 0 AND v_credits - v_assigned <= v_line;
    UPDATE credits_balance b
       SET credits = v_credits, assigned = v_assigned, at_risk = v_now_at_risk
     WHERE b.org_id = p_org_id;
    IF v_now_at_risk <> v_at_risk THEN
        v_risk_data := jsonb_build_object(
                    'credits', v_credits,
                    'assigned', v_assigned,
                    'available', v_credits - v_assigned,
                    'alert_threshold', v_line)
            || CASE WHEN v_percent IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('alert_threshold_percent', v_percent) END;
        IF v_now_at_risk THEN
            INSERT INTO notify_alert (org_id, kind, period, active, created_at, resolved_at, data)
            VALUES (p_org_id, 'at_risk', '', true, p_now, NULL, v_risk_data);
        ELSE
            UPDATE notify_alert x
               SET active = false, resolved_at = p_now, resolved_data = v_risk_data
             WHERE x.org_id = p_org_id AND x.kind = 'at_risk' AND x.active;
        END IF;
        INSERT INTO notify_event (org_id, type, data, created_at, dispatched_at)
        VALUES (p_org_id,
                CASE WHEN v_now_at_risk THEN 'balance.at_risk' ELSE 'balance.recovered' END,
                v_risk_data,
                p_now, NULL);
    END IF;

    -- Rule (credits/alerts.auto_top_up_check): the caller gets available before and
    -- after, and the org's trigger; crossing below it emits auto_top_up.due for the worker.
    -- (A start never lowers available: it falls by from_balance and rises by the cost.)
    r_available_after := v_credits - v_assigned;
    r_outcome := 'started';
END;
$$;
