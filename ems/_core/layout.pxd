# Column layout of every array the native core reads or writes: the one home for these indices.
# `cpdef enum` makes each name visible to Python (ems._core.layout.AGG_V_MIN) and to the kernels in C.

# aggregate: per-cluster float64 statistics, shape (C, AGG_F_COLS)
# (aggregate.pyx relies on MIN, MAX, MEAN, SPREAD being consecutive for each quantity)
cpdef enum:
    AGG_V_MIN = 0
    AGG_V_MAX = 1
    AGG_V_MEAN = 2
    AGG_V_SPREAD = 3
    AGG_T_MIN = 4
    AGG_T_MAX = 5
    AGG_T_MEAN = 6
    AGG_T_SPREAD = 7
    AGG_F_COLS = 8

# aggregate: per-cluster int32 locations and counts, shape (C, AGG_I_COLS); locations are cell indices
cpdef enum:
    AGG_V_MIN_CELL = 0
    AGG_V_MAX_CELL = 1
    AGG_T_MIN_CELL = 2
    AGG_T_MAX_CELL = 3
    AGG_V_INVALID = 4
    AGG_T_INVALID = 5
    AGG_I_COLS = 6

# aggregate: stack int32 locations (cluster, cell) and counts, shape (STK_I_COLS,)
# (each location's cell column follows its cluster column)
cpdef enum:
    STK_V_MIN_CLUSTER = 0
    STK_V_MIN_CELL = 1
    STK_V_MAX_CLUSTER = 2
    STK_V_MAX_CELL = 3
    STK_T_MIN_CLUSTER = 4
    STK_T_MIN_CELL = 5
    STK_T_MAX_CLUSTER = 6
    STK_T_MAX_CELL = 7
    STK_V_INVALID = 8
    STK_T_INVALID = 9
    STK_I_COLS = 10

# aggregate: per-pack float64 statistics, shape (C, P, PACK_F_COLS); per-pack int32 counts (C, P, PACK_I_COLS)
cpdef enum:
    PACK_V_MIN = 0
    PACK_V_MAX = 1
    PACK_V_MEAN = 2
    PACK_T_MIN = 3
    PACK_T_MAX = 4
    PACK_F_COLS = 5

cpdef enum:
    PACK_V_INVALID = 0
    PACK_T_INVALID = 1
    PACK_I_COLS = 2

# per-cluster measurements from the BMS/BCU, float64 shape (C, CL_IN_COLS); NaN = not available / stale
cpdef enum:
    CL_V = 0              # cluster terminal voltage, V
    CL_I = 1              # cluster current, A, > 0 discharging
    CL_INSULATION = 2     # insulation resistance, kOhm
    CL_POLE_T = 3         # hottest pole (terminal) temperature, degC
    CL_HVBOX_T = 4        # high-voltage box temperature, degC
    CL_BMS_CHG_A = 5      # charge current limit reported by the BMS, A (>= 0)
    CL_BMS_DCHG_A = 6     # discharge current limit reported by the BMS, A (>= 0)
    CL_RATED_CHG_A = 7    # rated charge current of the cluster, A
    CL_RATED_DCHG_A = 8   # rated discharge current of the cluster, A
    CL_LINK_LOST = 9      # 1: the BMS link is lost (its data is not there, so sensor-fault rows hold their state)
    CL_CELLS_AWAITED = 10 # 1: the link is silent or back for less than one cell age: a stale cell is awaited, not
                          # failed (the cell-sensor rows hold their state; ems.comm.cell_wait)
    CL_IN_COLS = 11

# per-cluster flags from the BMS/supervisor, uint8 shape (C, CL_FLAG_COLS)
cpdef enum:
    CLF_CONNECTED = 0         # main contactor closed
    CLF_CHG_PROHIBITED = 1    # BMS says charge prohibited (full)
    CLF_DCHG_PROHIBITED = 2   # BMS says discharge prohibited (empty)
    CLF_BALANCE_ALLOWED = 3   # supervisor allows passive balancing in this state
    CL_FLAG_COLS = 4

# protection table, float64 shape (Q, PT_F_COLS): per level L (0 operating, 1 warning, 2 fault)
# the threshold, the clearing hysteresis, the set (debounce) delay and the clear delay.
cpdef enum:
    PT_THR0 = 0
    PT_THR1 = 1
    PT_THR2 = 2
    PT_HYST0 = 3
    PT_HYST1 = 4
    PT_HYST2 = 5
    PT_SET_MS0 = 6
    PT_SET_MS1 = 7
    PT_SET_MS2 = 8
    PT_CLR_MS0 = 9
    PT_CLR_MS1 = 10
    PT_CLR_MS2 = 11
    PT_F_COLS = 12

# protection table, int32 shape (Q, PT_I_COLS)
cpdef enum:
    PT_SOURCE = 0        # which measured quantity the row watches (Source below)
    PT_DIR = 1           # +1: too high is bad, -1: too low is bad
    PT_WHEN = 2          # WHEN_ALWAYS / WHEN_CHARGING / WHEN_NOT_CHARGING
    PT_DERATE = 3        # derating mask: DIR_CHARGE | DIR_DISCHARGE, 0 = this row does not derate
    PT_TRIPS = 4         # 1: a latched fault opens the contactors after the trip delay
    PT_I_COLS = 5

cpdef enum:
    WHEN_ALWAYS = 0
    WHEN_CHARGING = 1
    WHEN_NOT_CHARGING = 2

cpdef enum:
    DIR_CHARGE = 1
    DIR_DISCHARGE = 2

# what a protection row watches; filled per cluster before the table is evaluated
cpdef enum:
    SRC_CELL_V_MAX = 0
    SRC_CELL_V_MIN = 1
    SRC_CELL_T_MAX = 2
    SRC_CELL_T_MIN = 3
    SRC_CELL_V_SPREAD = 4
    SRC_CELL_T_SPREAD = 5
    SRC_CLUSTER_V = 6
    SRC_CHARGE_A = 7          # charge current as a positive number (0 while discharging)
    SRC_DISCHARGE_A = 8       # discharge current as a positive number (0 while charging)
    SRC_INSULATION_KOHM = 9
    SRC_POLE_T = 10
    SRC_HVBOX_T = 11
    SRC_T_SENSOR_INVALID = 12 # invalid cell temperatures + NaN pole/HV-box temperatures
    SRC_V_SENSOR_INVALID = 13 # invalid or stale cell voltages
    SRC_CURRENT_MISSING = 14  # 1 when the cluster current is NaN
    SRC_CLUSTER_V_MISSING = 15
    SRC_INSULATION_MISSING = 16
    SRC_SOC_MEAN = 17
    SRC_COUNT = 18

# protection state per (row, cluster): timers, float64 shape (Q, C, PS_T_COLS)
cpdef enum:
    PS_SET0 = 0
    PS_SET1 = 1
    PS_SET2 = 2
    PS_CLR0 = 3
    PS_CLR1 = 4
    PS_CLR2 = 5
    PS_T_COLS = 6

# protection result per cluster, uint8 shape (C, CLP_COLS)
cpdef enum:
    CLP_CHG_ALLOWED = 0
    CLP_DCHG_ALLOWED = 1
    CLP_TRIP_PENDING = 2     # a tripping fault is latched: currents forced to zero, contactors still closed
    CLP_TRIPPED = 3          # trip delay elapsed: open the contactors
    CLP_COLS = 4

# derating result per cluster, float64 shape (C, DR_COLS)
cpdef enum:
    DR_CHG_A = 0
    DR_DCHG_A = 1
    DR_CHG_FACTOR = 2        # 0..1 from the tables alone (before BMS limits and protection)
    DR_DCHG_FACTOR = 3
    DR_COLS = 4

# SOC counting result per cluster, float64 shape (C, SOC_COLS)
cpdef enum:
    SOC_MIN = 0
    SOC_MAX = 1
    SOC_MEAN = 2             # capacity-weighted
    SOC_SOE_DCHG_WH = 3      # energy the series string can still deliver (weakest pack)
    SOC_SOE_CHG_WH = 4       # energy the string can still absorb (fullest pack)
    SOC_AH_CHARGED = 5       # float64 throughput accumulators, Ah, since start
    SOC_AH_DISCHARGED = 6
    SOC_BOUND = 7            # uncertainty bound of SOC_MEAN, ± percentage points
    SOC_BOUND_MAX = 8        # widest bound of any cell, ± percentage points
    SOC_COLS = 9

# anchor bits reported per cluster by SOC estimation (in the step that took them)
cpdef enum:
    ANCHOR_FULL = 1          # a cell at full (CV taper at full voltage, or BMS charge prohibited)
    ANCHOR_EMPTY = 2         # a cell at empty
    ANCHOR_OCV = 4           # open-circuit voltage after rest, where the OCV curve is steep
    ANCHOR_KNEE = 8          # voltage under load on a steep end of the OCV curve

# SOC estimator state per cluster, float64 (C, SE_COLS). Kept between ticks; the supervisor saves it.
cpdef enum:
    SE_PEND_DCHG_AH = 0      # measured discharge since the last cell step, Ah
    SE_PEND_CHG_AH = 1       # measured charge since the last cell step, Ah (before the charge efficiency)
    SE_PEND_S = 2            # time since the last cell step, s
    SE_PEND_UNKNOWN_S = 3    # of which the current was unknown (NaN), s
    SE_REST_S = 4            # time at |I| <= idle current, s
    SE_REST_DONE = 5         # 1 once this rest's OCV update was taken
    SE_HYST = 6              # hysteresis state, -1 (after discharge) .. +1 (after charge)
    SE_NET_AH = 7            # net discharge since start as measured (before the offset correction), Ah
    SE_ANCHOR_SEQ = 8        # counts anchors (SOH reads the pairs)
    SE_ANCHOR_SOC = 9        # SOC the anchor measured (fraction), mean of the anchored cells
    SE_ANCHOR_VAR = 10       # its variance (fraction²)
    SE_ANCHOR_NET_AH = 11    # SE_NET_AH at that anchor
    SE_PREV_I = 12           # current and mean cell voltage at the last cell step (resistance from steps)
    SE_PREV_V = 13
    SE_R_SEQ = 14            # counts resistance samples
    SE_R_OHM = 15            # last resistance sample, ohm per cell
    SE_NET_SINCE_AH = 16     # counted net discharge since the cluster's last anchor, Ah
    SE_OFFSET_A = 17         # current sensor offset subtracted before counting, A (learned by SOH)
    SE_OFFSET_BOUND_A = 18   # what is left of the offset error, A (sigma grows with it over time)
    SE_CAP_ERR = 19          # the capacity's relative error now: EP_CAP_ERR until SOH has learned it better
    # the settling of the cluster's mean cell voltage at rest: a least-squares line with exponential
    # forgetting (EP_RELAX_TAU_S), x in s relative to the newest sample; sums of w, w·x, w·x², w·y, w·x·y
    SE_RX_S0 = 20
    SE_RX_S1 = 21
    SE_RX_S2 = 22
    SE_RX_SY = 23
    SE_RX_SXY = 24
    SE_RX_RATE = 25          # its slope, V/s (NaN when not at rest or not known yet)
    SE_PEND_COUNTED_S = 26   # of SE_PEND_S, the time a current outside the zero deadband was counted, s
    SE_GAIN_ERR = 27         # the current gain's error still in the count, fraction: EP_GAIN_ERR until SOH's
                             # capacity (learned in the sensor's own units) has absorbed most of it
    SE_COLS = 28

# SOC estimator parameters, float64 (EP_COLS,) (the tick parameters give η, idle current, full/empty volts)
cpdef enum:
    EP_STEP_S = 0            # cell step period, s (0: every call)
    EP_GAIN_ERR = 1          # current sensor gain error bound, fraction
    EP_OFFSET_A = 2          # current sensor offset bound, A
    EP_CAP_ERR = 3           # uncertainty of the configured capacity, fraction (SE_CAP_ERR starts here)
    EP_TAPER_A = 4           # |I| at or below this at full/empty voltage is the end of charge/discharge, A
    EP_SIG_FULL = 5          # SOC sigma at a full / empty anchor, fraction
    EP_SIG_EMPTY = 6
    EP_SIG_SHIFT = 7         # sigma of cells moved with their cluster's anchored cell
    EP_REST_S = 8            # minimum rest before the OCV update, s (it also waits for EP_RELAX_RATE)
    EP_REST_V_LO = 9         # an OCV update can pass the EP_OCV_MAX_SIG gate only at or below / at or above these volts
    EP_REST_V_HI = 10
    EP_KNEE_V_LO = 11        # voltage under load informative (slope >= knee min) below / above
    EP_KNEE_V_HI = 12
    EP_SIG_V = 13            # voltage measurement + OCV model error, V (1 sigma)
    EP_HYST_AH_FRAC = 14     # throughput (fraction of capacity) that moves hysteresis 63 % of the way
    EP_R0_OHM = 15           # cell resistance for the voltage under load, ohm (also its 1-sigma error)
    EP_T_MIN = 16            # OCV table valid between these cell temperatures, degC
    EP_T_MAX = 17
    EP_SIG_MIN = 18          # sigma never below this, fraction
    EP_BOUND_K = 19          # bound = k × sigma
    EP_R_STEP_A = 20         # current step that gives a resistance sample, A
    EP_KNEE = 21             # 1.0: voltage updates under load on the steep ends (the Kalman-type filter)
    EP_ZERO_A = 22           # |I| at or below this (after the offset correction) counts as zero, A
    EP_OCV_MAX_SIG = 23      # an OCV update only where the voltage's ±2 sigma maps to an SOC sigma <= this, fraction
    EP_RELAX_RATE = 24       # relaxed: the mean cell voltage settles slower than this, V/s
    EP_RELAX_TAU_S = 25      # forgetting time of the settling-rate fit, s
    EP_COLS = 26
# The hysteresis half-width is not a parameter: it varies along the curve (wider at low SOC on LFP) and
# comes with the OCV table as a second array on the same grid (hyst_v).

# arbitration request kinds (battery power, W, > 0 discharging)
cpdef enum:
    REQ_LE = 0      # pcs_w <= value (hard)
    REQ_GE = 1      # pcs_w >= value (hard)
    REQ_EQ = 2      # pcs_w == value (hard)
    REQ_TARGET = 3  # as close to value as still feasible (soft: clamped, never dropped)

cpdef enum:
    RS_INACTIVE = 0
    RS_APPLIED = 1
    RS_CLAMPED = 2     # a TARGET moved into the feasible interval
    RS_DROPPED = 3     # infeasible (or NaN) and dropped; the interval is unchanged

# bypass reason per pack, uint8 shape (C, P)
cpdef enum:
    BYP_NONE = 0
    BYP_FAULT = 1
    BYP_CONSISTENCY = 2

# bypass parameter vector, float64 (BP_COLS,)
cpdef enum:
    BP_ENABLED = 0            # 1.0: bypass function enabled
    BP_CONSISTENCY_MODES = 1  # bit mask: 1 on-grid charging, 2 on-grid discharging, 4 off-grid charging, 8 off-grid discharging
    BP_ON_GRID = 2            # 1.0 when grid-connected
    BP_SPREAD_ON_PCT = 3      # start: PACK SOC this far from the cluster's other extreme
    BP_SPREAD_OFF_PCT = 4     # release: back within this
    BP_DC_MIN_V = 5           # PCS DC window minimum the remaining string must stay above
    BP_MAX_PER_CLUSTER = 6
    BP_IDLE_A = 7
    BP_CELL_OV_V = 8          # "general" (warning-level) thresholds from the protection table
    BP_CELL_UV_V = 9
    BP_CELL_OT_CHG_DEGC = 10
    BP_CELL_OT_DCHG_DEGC = 11
    BP_CELL_LT_CHG_DEGC = 12
    BP_CELL_LT_DCHG_DEGC = 13
    BP_POLE_OT_DEGC = 14
    BP_V_HYST = 15
    BP_T_HYST = 16
    BP_NOMINAL_CELL_V = 17    # voltage assumed for a PACK with no valid cell voltage
    BP_COLS = 18


cpdef enum:
    MAX_PACKS = 256           # per cluster; sizes the bypass kernel's stack buffers

# fast-loop tick parameters, float64 (TP_COLS,): changed by the supervisor between ticks, never rebound
cpdef enum:
    TP_V_LO = 0                 # cell voltage sensor plausibility range, V
    TP_V_HI = 1
    TP_T_LO = 2                 # cell temperature sensor plausibility range, degC
    TP_T_HI = 3
    TP_IDLE_A = 4               # |current| below this is rest, A
    TP_TRIP_DELAY_MS = 5        # pending trip (currents at zero) before the contactors open
    TP_STACK_MAX_CHG_A = 6      # stack ratings, A
    TP_STACK_MAX_DCHG_A = 7
    TP_ETA_CHARGE = 8           # coulombic charge efficiency, 0..1
    TP_V_FULL = 9               # cell voltage anchoring a pack at full / empty, V
    TP_V_EMPTY = 10
    TP_CLUSTER_NOMINAL_V = 11   # for SOE, V
    TP_BAL_ON_MV = 12           # balancing starts above cluster minimum + this, mV
    TP_BAL_OFF_MV = 13          # and stops within this, mV
    TP_BAL_V_MIN = 14           # no balancing below this cell voltage, V
    TP_PCS_MAX_CHG_W = 15       # PCS rating, W
    TP_PCS_MAX_DCHG_W = 16
    TP_RAMP_W_PER_S = 17        # setpoint ramp, W/s (0 = no ramp)
    TP_DEADBAND_W = 18
    TP_TRIP_OPEN_A = 19         # a pending trip opens the contactors once |cluster current| is at most this, A
    TP_TRIP_MAX_WAIT_MS = 20    # ... or after this long pending, whatever the current (never before the delay)
    TP_COLS = 21

# fast-loop tick results, float64 (TO_COLS,)
cpdef enum:
    TO_STACK_CHG_A = 0
    TO_STACK_DCHG_A = 1
    TO_DC_V = 2                 # DC voltage used to turn current limits into power (mean connected cluster)
    TO_CHG_LIMIT_W = 3
    TO_DCHG_LIMIT_W = 4
    TO_TARGET_W = 5             # arbitration result
    TO_INTERVAL_LO_W = 6
    TO_INTERVAL_HI_W = 7
    TO_SETPOINT_W = 8           # the PCS command; also the ramp's state
    TO_UNALLOCATED_W = 9        # what the clusters could not take
    TO_N_CHANGED = 10           # protection levels that changed this tick
    TO_ANY_TRIP_PENDING = 11
    TO_ANY_TRIPPED = 12
    TO_COLS = 13
