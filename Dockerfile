# The deployment image: Apache Airflow 3.3.2 with the catalog-sync package installed from
# this repository, its DAGs and its demo entity map. docker-compose.yaml builds it.
FROM apache/airflow:3.3.2-python3.11

# The package (plugins/catalog_sync) with its pinned dependencies; pinning apache-airflow
# again keeps pip from replacing the image's Airflow. setup.py builds the optional C
# accelerator where the image has a compiler; without one the same code runs in Python.
COPY --chown=airflow:root pyproject.toml setup.py MANIFEST.in README.md /opt/catalog-sync/
COPY --chown=airflow:root plugins/ /opt/catalog-sync/plugins/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" /opt/catalog-sync

# The two DAG files and the entity map (mount your own map and point CATALOG_SYNC_CONFIG
# at it). The receiver's data folder exists so that its volume belongs to airflow.
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root include/ /opt/airflow/include/
RUN mkdir -p /opt/airflow/receiver
ENV CATALOG_SYNC_CONFIG=/opt/airflow/include/entity_map.yaml
