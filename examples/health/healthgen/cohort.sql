-- Joint cohort statistics of three hospitals: for every diagnosis and age
-- band, the number of distinct patients (a patient treated at several
-- hospitals counts once), admissions, mean length of stay in days, and
-- in-hospital deaths.
--
-- The clean-room runner accepts a single SELECT without UNION. The FULL
-- JOINs on encounter_id, which never match (every hospital prefixes its own
-- ids), stack the three hospitals' rows: each joined row carries one
-- hospital's columns and NULLs for the others, and coalesce() reads
-- whichever is set. patient_ref and length_of_stay may appear only inside
-- count/sum/avg (aggregate-only).
--
-- Every hospital requires at least 10 of its own distinct patients behind
-- each output row (min-entities on patient_ref): the runner counts them for
-- each hospital and drops the rows below, so a cell appears only when all
-- three hospitals contribute at least 10 patients to it.
SELECT
  coalesce(h1.diagnosis, h2.diagnosis, h3.diagnosis) AS diagnosis,
  coalesce(h1.age_band, h2.age_band, h3.age_band) AS age_band,
  count(DISTINCT coalesce(h1.patient_ref, h2.patient_ref, h3.patient_ref)) AS patients,
  count(*) AS admissions,
  round(avg(coalesce(h1.length_of_stay, h2.length_of_stay, h3.length_of_stay)), 2) AS mean_stay,
  count(*) FILTER (WHERE coalesce(h1.outcome, h2.outcome, h3.outcome) = 'died') AS deaths
FROM hospital1 h1
FULL JOIN hospital2 h2 ON h1.encounter_id = h2.encounter_id
FULL JOIN hospital3 h3 ON h1.encounter_id = h3.encounter_id
GROUP BY 1, 2
ORDER BY 1, 2
